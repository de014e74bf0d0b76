"""vbon_exp/bench/ (`make bench`), run here at toy scale (`--toy`: a 97-token vocabulary, 1-2 layer models, batch
8 × 3 tokens): every section writes its numbers with the minimum and median of its repetitions and the other
processes' load; a disturbed section is timed again; the busy-core section runs beside its own spinning process; the
summary's targets and table; the GPU sections in bfloat16 on the CPU; the one-line refusal of --device cuda without
CUDA; the GPU-hour estimate. Benchmarks are not tests: no time is asserted against a bound, only that each number is
measured, positive and consistent with the settings."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from vbon_exp.bench import busy, cli, report, rl, timing
from vbon_exp.bench.scale import TOY


def _positive_finite(summary: dict, *keys: str) -> None:
    for key in keys:
        value = summary.get(key)
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_toy_bench_writes_min_median_load_and_the_busy_core_table(tmp_path, capsys, restore_threads):
    """Both samplers against generate, our RLOO step (TRL is an optional extra), the busy-core section; the summary
    carries each repetition, min- and median-based values, loads per section and every target with its verdict."""
    assert cli.main(["--toy", "--skip-precision", "--out", str(tmp_path), "--reps", "2", "--rl-steps", "2",
                     "--skip-trl", "--skip-cache", "--skip-ppo", "--threads", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    printed = capsys.readouterr().out
    tokens = TOY.batch * TOY.new_tokens
    for size in ("tiny", "small"):  # the GPT-2-small-sized sampler is measured by default (--quick skips it)
        ours, theirs = summary[f"sampler_times_s_{size}"], summary[f"generate_times_s_{size}"]
        assert len(ours) == len(theirs) == 2 and min(ours) > 0  # one timed call per rep and side, warm-up excluded
        assert summary[f"sampler_tok_s_{size}"] == pytest.approx(tokens / statistics.median(ours))
        assert summary[f"sampler_tok_s_{size}_best"] == pytest.approx(tokens / min(ours))
        assert summary[f"sampler_speedup_{size}"] == pytest.approx(statistics.median(theirs) / statistics.median(ours))
    assert summary["step_s_ours"] == pytest.approx(statistics.median(summary["step_times_s_ours"]))
    assert summary["step_s_ours_best"] == min(summary["step_times_s_ours"])
    loads = summary["machine"]["other_processes_cores_by_stage"]
    assert set(loads) == {"sampler tiny", "sampler small", "RLOO step", "busy core"}
    assert all(load is None or load >= 0 for load in loads.values())
    # the busy-core section: auto saw the spinner, both settings timed, slowdowns against the quiet sections
    assert summary["busy_auto_threads"] >= 1
    assert "usable cores" in summary["busy_auto_reason"] or "OMP_NUM_THREADS" in summary["busy_auto_reason"]
    for label in ("auto", "2"):
        assert len(summary[f"busy_sampler_times_s_{label}"]) == 2 and len(summary[f"busy_rloo_times_s_{label}"]) == 2
        assert summary[f"busy_sampler_slowdown_{label}"] == pytest.approx(
            summary[f"busy_sampler_s_{label}"] / statistics.median(summary["sampler_times_s_tiny"]))
    assert torch.get_num_threads() == 1  # the section restored the bench's own setting
    assert set(summary["targets"]) == set(report.TARGETS)
    busy_target = summary["targets"]["busy_sampler_slowdown_auto"]
    assert busy_target["met"] is (busy_target["value"] <= 2.0)
    assert summary["targets"]["bytes_per_cached_reward"] == {"bound": "<= 4", "value": None, "met": None}
    for line in ("tiny GPT-2 (2×128): ours, tokens/s", "median", "best", "load", "with one busy core",
                 "slowdown of our sampler at auto: target <= 2", f"written: {tmp_path / 'summary.json'}"):
        assert line in printed, line


def test_quick_skips_the_gpt2_small_sampler(tmp_path, restore_threads):
    assert cli.main(["--toy", "--skip-precision", "--quick", "--out", str(tmp_path), "--reps", "1", "--skip-rl",
                     "--skip-cache", "--skip-ppo", "--skip-busy", "--threads", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "sampler_tok_s_small" not in summary and summary["skipped"]["sampler small"] == "--quick / --skip-small"
    assert summary["targets"]["sampler_speedup_small"]["met"] is None


def test_a_disturbed_section_is_timed_again_and_the_least_disturbed_attempt_kept(monkeypatch, capsys):
    loads = iter([0.9, 0.5, 0.1])

    class FakeLoad:
        def cores(self):
            return next(loads)

    monkeypatch.setattr(timing, "OtherLoad", FakeLoad)
    attempt = iter(range(1, 10))
    summary = {"machine": {}}
    timing.run_section("sampler tiny", lambda: {"x": next(attempt)}, summary, retimes=2)
    assert summary["x"] == 3 and summary["retimed"]["sampler tiny"] == [0.9, 0.5, 0.1]
    assert summary["machine"]["other_processes_cores_by_stage"]["sampler tiny"] == 0.1
    assert "timing it again" in capsys.readouterr().err
    loads = iter([0.9, 0.5])
    summary = {"machine": {}}
    timing.run_section("s", lambda: {"x": next(attempt)}, summary, retimes=1)  # at most one more: the quieter kept
    assert summary["x"] == 5 and summary["retimed"]["s"] == [0.9, 0.5]
    loads = iter([0.05])
    summary = {"machine": {}}
    timing.run_section("s", lambda: {"x": next(attempt)}, summary, retimes=2)  # quiet: timed once
    assert summary["x"] == 6 and "retimed" not in summary


def test_the_busy_core_is_another_process_that_ends_with_the_section():
    with busy.busy_core() as spinner:
        assert spinner.poll() is None  # spinning (it said so before the section started)
    assert spinner.poll() is not None  # killed on exit


def test_ppo_step_and_cache_build_in_bfloat16_write_the_summary(tmp_path, capsys, restore_threads, monkeypatch):
    """The sections a GPU runs (PPO update, reference cache) in bfloat16, here on the CPU: the summary names the
    device and dtype, carries positive rates that follow from the times and settings, and the vLLM section is
    skipped with its reason (it needs CUDA). On a CPU without bf16 instructions (stood in for by VBON_EXP_CPU_BF16=0)
    the bench warns that bf16 is emulated there."""
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "0")
    code = cli.main(["--toy", "--skip-precision", "--out", str(tmp_path), "--size", "tiny", "--dtype", "bfloat16",
                     "--reps", "1",
                     "--rl-steps", "2", "--ppo-batch", "8", "--ppo-epochs", "2", "--num-minibatches", "2",
                     "--micro-batch-size", "2", "--cache-prompts", "3", "--cache-m", "5", "--cache-new-tokens", "2",
                     "--skip-rl", "--quick", "--skip-busy", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["device"], summary["dtype"], summary["gpu"]) == ("cpu", "bfloat16", None)
    assert summary["machine"]["torch"] == torch.__version__ and summary["machine"]["cuda"] == torch.version.cuda
    assert summary["settings"] == {**summary["settings"], "size": "tiny", "ppo_batch": 8, "ppo_epochs": 2,
                                   "num_minibatches": 2, "micro_batch_size": 2, "cache_new_tokens": 2, "toy": True}
    assert "bench: warning: --dtype bfloat16 on this CPU" in captured.err and "is emulated" in captured.err
    _positive_finite(summary, "ppo_step_s", "ppo_step_s_best", "ppo_episodes_per_s", "cache_build_s",
                     "cache_samples_per_s", "cache_gen_tok_s", "cache_score_samples_s", "sampler_tok_s_tiny")
    assert len(summary["ppo_step_times_s"]) == 2  # --rl-steps timed updates after the warm-up
    assert summary["ppo_step_s"] == pytest.approx(statistics.median(summary["ppo_step_times_s"]))
    assert summary["ppo_step_s_best"] == min(summary["ppo_step_times_s"])
    assert summary["ppo_episodes_per_s"] == pytest.approx(8 / summary["ppo_step_s"])
    assert summary["ppo_optimizer_steps"] == 2 * 2  # counted by the trainer's scheduler: epochs × minibatches
    assert summary["cache_rewards"] == 3 * 5
    assert summary["cache_samples_per_s"] == pytest.approx(15 / summary["cache_build_s"])
    assert set(summary["machine"]["other_processes_cores_by_stage"]) == {"sampler tiny", "PPO step",
                                                                         "reference cache"}
    assert "vllm_tok_s" not in summary and "failed" not in summary
    assert "CUDA" in summary["skipped"]["vLLM sampler"]
    for line in ("PPO step (tiny GPT-2, 8 episodes, 2×2 opt. steps): s", "PPO: episodes/s",
                 "reference cache (tiny GPT-2, 2 tokens): samples/s", "vLLM sampler: skipped (", "hours of a run here"):
        assert line in captured.out, line


def test_the_reference_cache_child_counts_its_own_files(tmp_path, capsys):
    from vbon_exp.bench.cache import build_cache_child

    build_cache_child(TOY, str(tmp_path / "cache"), prompts=3, m=5, new_tokens=2)
    cache = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cache["cache_rewards"] == 3 * 5  # every prompt × M reward, counted from the cache itself
    assert cache["cache_files"] >= 3  # a chunk, its checksum sidecar, meta.json
    assert cache["cache_bytes"] > 0 and cache["bytes_per_cached_reward"] == pytest.approx(
        cache["cache_bytes"] / cache["cache_rewards"])


def test_a_failing_section_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys, restore_threads):
    """An unattended GPU run keeps the numbers of the sections that worked: the failure is named in the summary and
    the table, and the exit status is 1."""
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(rl, "bench_ppo", broken)
    assert cli.main(["--toy", "--skip-precision", "--out", str(tmp_path), "--size", "tiny", "--reps", "1",
                     "--skip-rl", "--skip-cache",
                     "--quick", "--skip-busy", "--threads", "1"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failed"] == {"PPO step": "RuntimeError: CUDA out of memory (simulated)"}
    _positive_finite(summary, "sampler_tok_s_tiny")
    assert "PPO step: FAILED (RuntimeError: CUDA out of memory (simulated))" in capsys.readouterr().out


def test_cuda_without_cuda_is_refused_in_one_line_before_any_model(tmp_path, monkeypatch, capsys):
    from vbon_exp.bench import cache, sampler, scale, vllm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    for module in (scale, sampler, rl, cache, vllm, busy):
        if hasattr(module, "random_gpt2"):
            monkeypatch.setattr(module, "random_gpt2", no_model)
    assert cli.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: --device cuda but torch.cuda.is_available() is False ("), err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: the refusal cannot be shown")
def test_the_script_exits_with_status_2_without_cuda(tmp_path):
    """What `make bench DEVICE=cuda` does on a machine without CUDA: status 2, one line on stderr."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--device", "cuda", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("bench: --device cuda but torch.cuda.is_available() is False (")
    assert proc.stderr.count("\n") == 1


def test_estimate_hours_from_the_rates():
    """Hours = episodes / ppo_episodes_per_s + (cache + eval samples) / cache_samples_per_s, over 3600."""
    summary = {"ppo_episodes_per_s": 10.0, "cache_samples_per_s": 400.0}
    hours = report.estimate_hours(summary, episodes=36_000, cache_samples=2_560_000, eval_samples=144_000)
    assert hours == pytest.approx({"train": 1.0, "cache": 2_560_000 / 400 / 3600, "eval": 0.1,
                                   "total": 1.0 + 2_560_000 / 400 / 3600 + 0.1})
    # a run without training (BoN) needs no PPO rate; one with training does, and says which key is missing
    assert report.estimate_hours({"cache_samples_per_s": 400.0}, 0, 1440, 0)["total"] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="ppo_episodes_per_s"):
        report.estimate_hours({"cache_samples_per_s": 400.0}, 100, 0, 0)


def test_estimate_mode_reads_the_written_summary(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({
        "device": "cuda", "dtype": "bfloat16", "machine": {"gpu": "Some GPU"}, "settings": {"size": "small"},
        "ppo_episodes_per_s": 10.0, "cache_samples_per_s": 400.0}))
    assert cli.main(["--out", str(tmp_path), "--estimate", "36000", "1440000", "0"]) == 0
    assert capsys.readouterr().out.strip() == (
        "Some GPU, bfloat16, small model: train 1.00 h + cache 1.00 h + eval 0.00 h = 2.00 h")
    assert cli.main(["--out", str(tmp_path / "nowhere"), "--estimate", "1", "1", "1"]) == 2


def test_the_table_of_a_gpu_summary(tmp_path, capsys):
    """What a GPU run prints (that machine is not here): its GPU, the memory rows, no CPU targets."""
    summary = {
        "device": "cuda", "dtype": "bfloat16", "gpu": "NVIDIA H100 80GB HBM3",
        "settings": {"device": "cuda", "size": "small", "ppo_batch": 32, "ppo_epochs": 4, "num_minibatches": 1,
                     "cache_new_tokens": 48},
        "machine": {"gpu": "NVIDIA H100 80GB HBM3", "gpu_memory_gb": 79.2, "cuda": "12.8", "cpus": 16,
                    "torch": "2.13.0+cu128", "torch_threads": 16, "transformers": "5.24.0",
                    "load_average_1min_start": 0.1, "other_processes_cores": 0.0},
        "sampler_speedup_tiny": 1.0, "ppo_step_s": 2.0, "ppo_episodes_per_s": 16.0, "ppo_peak_gpu_mem_gb": 7.5,
        "cache_samples_per_s": 900.0, "skipped": {"vLLM sampler": "vllm is not installed (pip install vllm)"},
    }
    report.print_table(summary, tmp_path)
    out = capsys.readouterr().out
    for line in ("PPO step (GPT-2-small-sized, 32 episodes, 4×1 opt. steps): s", "PPO step: peak GPU memory, GiB",
                 "vLLM sampler: skipped (vllm is not installed (pip install vllm))",
                 "cuda, bfloat16: NVIDIA H100 80GB HBM3 (79 GiB), CUDA 12.8, 16 CPUs",
                 "hours of a run here ≈ (episodes / 16 + (cache + eval samples) / 900) / 3600"):
        assert line in out, line
    assert "7.5" in out and "target >=" not in out  # the CPU targets are not judged on a GPU


def test_one_precision_setting_and_one_kl_chunk_measured_in_this_process():
    """The children's work, run here at toy size: a PPO update with LoRA on the shared base (bf16 autocast,
    checkpointing) trains far fewer parameters than the whole model and reports a time and a peak; the KL evaluation
    gives the same KL chunked and unchunked (tolerance 1e-5: float32 sums over a 970-token vocabulary)."""
    from vbon_exp.bench import memory

    whole = memory.ppo_child(TOY, "tiny", "fp32", "cpu")
    lora = memory.ppo_child(TOY, "tiny", "+ LoRA r16", "cpu")
    assert lora["step_s"] > 0 and lora["peak_bytes"] >= 0
    assert 0 < lora["trainable_params"] < whole["trainable_params"] / 2
    plain, chunked = (memory.kl_child(chunk, "cpu", vocab=970) for chunk in (0, 16))
    assert plain["positions"] == chunked["positions"] == 32 * 64
    assert abs(plain["kl_mean"] - chunked["kl_mean"]) <= 1e-5 * max(1.0, abs(plain["kl_mean"]))


@pytest.mark.slow  # seven subprocesses (~30 s)
def test_the_precision_and_kl_memory_sections_measure_each_setting_in_its_own_process(tmp_path, capsys,
                                                                                     restore_threads):
    """Section 7: a PPO update in float32, bf16 autocast, + checkpointing, + LoRA — seconds and peak memory each,
    LoRA training far fewer parameters; section 8: the KL evaluation's peak memory unchunked and chunked (toy sizes:
    the numbers mean nothing, the shape of the summary and the table does)."""
    assert cli.main(["--toy", "--out", str(tmp_path), "--reps", "1", "--skip-rl", "--skip-cache", "--skip-ppo",
                     "--quick", "--skip-busy", "--threads", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    table = summary["ppo_precision"]
    assert list(table) == ["fp32", "bf16 autocast", "+ checkpointing", "+ LoRA r16"]
    for row in table.values():
        assert row["step_s"] > 0 and row["peak_bytes"] > 0
    assert table["+ LoRA r16"]["trainable_params"] < table["fp32"]["trainable_params"] / 2
    kl = summary["kl_eval_memory"]
    assert list(kl) == ["0", "1024", "256"] and all(r["peak_bytes"] > 0 for r in kl.values())
    assert len({round(r["kl_mean"], 6) for r in kl.values()}) == 1  # the same KL, however it is chunked
    printed = capsys.readouterr().out
    for line in ("PPO update, GPT-2-small-sized", "+ LoRA r16", "KL evaluation", "chunk 256"):
        assert line in printed, line
