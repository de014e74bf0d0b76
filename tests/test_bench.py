"""scripts/bench.py's device sections (`make bench DEVICE=cuda`), run here on the CPU at toy scale: one PPO update
and a reference-cache build in the dtype a GPU uses, the summary they write, the GPU-hour estimate derived from it,
and the one-line refusal of --device cuda where there is no CUDA. Benchmarks are not tests: no time is asserted
against a bound, only that each number is measured, positive and consistent with the settings."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT
from test_bench_throughput import _load_bench


@pytest.fixture
def bench(monkeypatch):
    """scripts/bench.py at toy scale: batch 8 × 3 new tokens, a 1-layer 16-wide GPT-2 with a 97-token vocabulary
    (the cache subprocess gets the vocabulary; it builds the 2-layer tiny model, still small at 97 tokens)."""
    module = _load_bench()
    monkeypatch.setattr(module, "VOCAB", 97)
    monkeypatch.setattr(module, "BATCH", 8)
    monkeypatch.setattr(module, "NEW_TOKENS", 3)
    monkeypatch.setattr(module, "PROMPT_LEN", 4)
    monkeypatch.setattr(module, "SIZES", {"tiny": {"n_layer": 1, "n_embd": 16, "n_head": 2}})
    return module


def _positive_finite(summary: dict, *keys: str) -> None:
    for key in keys:
        value = summary.get(key)
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)


def test_ppo_step_and_cache_build_in_bfloat16_write_the_summary(bench, tmp_path, capsys):
    """The sections a GPU runs (PPO update, reference cache) in bfloat16, here on the CPU: the summary names the
    device and dtype, carries positive rates that follow from the times and settings, and the vLLM section is
    skipped with its reason (it needs CUDA)."""
    code = bench.main(["--out", str(tmp_path), "--size", "tiny", "--dtype", "bfloat16", "--reps", "1",
                       "--rl-steps", "2", "--ppo-batch", "8", "--ppo-epochs", "2", "--num-minibatches", "2",
                       "--micro-batch-size", "2", "--cache-prompts", "3", "--cache-m", "5", "--cache-new-tokens", "2",
                       "--skip-rl"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["device"], summary["dtype"], summary["gpu"]) == ("cpu", "bfloat16", None)
    assert summary["machine"]["torch"] == torch.__version__ and summary["machine"]["cuda"] == torch.version.cuda
    assert summary["settings"] == {**summary["settings"], "size": "tiny", "ppo_batch": 8, "ppo_epochs": 2,
                                   "num_minibatches": 2, "micro_batch_size": 2, "cache_new_tokens": 2}
    assert "bench: warning: --dtype bfloat16 on CPU runs, but slowly" in captured.err

    _positive_finite(summary, "ppo_step_s", "ppo_episodes_per_s", "cache_build_s", "cache_samples_per_s",
                     "cache_gen_tok_s", "cache_score_samples_s", "sampler_tok_s_tiny")
    assert len(summary["ppo_step_times_s"]) == 2  # --rl-steps timed updates after the warm-up
    assert summary["ppo_step_s"] == pytest.approx(statistics.median(summary["ppo_step_times_s"]))
    assert summary["ppo_episodes_per_s"] == pytest.approx(8 / summary["ppo_step_s"])
    assert summary["ppo_optimizer_steps"] == 2 * 2  # counted by the trainer's scheduler: epochs × minibatches
    assert summary["cache_rewards"] == 3 * 5
    assert summary["cache_samples_per_s"] == pytest.approx(15 / summary["cache_build_s"])

    # --size tiny shrinks every section: no GPT-2-small-sized sampler; the RLOO comparison was skipped by request
    assert set(summary["machine"]["other_processes_cores_by_stage"]) == {"sampler tiny", "PPO step",
                                                                         "reference cache"}
    assert "vllm_tok_s" not in summary and "failed" not in summary
    assert "CUDA" in summary["skipped"]["vLLM sampler"]
    target = summary["targets"]["sampler_speedup_tiny"]
    assert target["met"] is (target["value"] >= 5.0)  # "NOT met" once counted as met
    for line in ("PPO step (tiny GPT-2, 8 episodes, 2×2 opt. steps): s", "PPO: episodes/s",
                 "reference cache (tiny GPT-2, 2 tokens): samples/s", "vLLM sampler: skipped (", "hours of a run here"):
        assert line in captured.out, line


def test_a_failing_section_is_reported_and_the_others_still_run(bench, tmp_path, monkeypatch, capsys):
    """An unattended GPU run keeps the numbers of the sections that worked: the failure is named in the summary and
    the table, and the exit status is 1."""
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(bench, "bench_ppo", broken)
    assert bench.main(["--out", str(tmp_path), "--size", "tiny", "--reps", "1", "--skip-rl", "--skip-cache"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failed"] == {"PPO step": "RuntimeError: CUDA out of memory (simulated)"}
    _positive_finite(summary, "sampler_tok_s_tiny")
    assert "PPO step: FAILED (RuntimeError: CUDA out of memory (simulated))" in capsys.readouterr().out


def test_cuda_without_cuda_is_refused_in_one_line_before_any_model(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(bench, "random_gpt2", no_model)
    assert bench.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
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
    from_bench = _load_bench()
    summary = {"ppo_episodes_per_s": 10.0, "cache_samples_per_s": 400.0}
    hours = from_bench.estimate_hours(summary, episodes=36_000, cache_samples=2_560_000, eval_samples=144_000)
    assert hours == pytest.approx({"train": 1.0, "cache": 2_560_000 / 400 / 3600, "eval": 0.1,
                                   "total": 1.0 + 2_560_000 / 400 / 3600 + 0.1})
    # a run without training (BoN) needs no PPO rate; one with training does, and says which key is missing
    assert from_bench.estimate_hours({"cache_samples_per_s": 400.0}, 0, 1440, 0)["total"] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="ppo_episodes_per_s"):
        from_bench.estimate_hours({"cache_samples_per_s": 400.0}, 100, 0, 0)


def test_estimate_mode_reads_the_written_summary(tmp_path, capsys):
    bench = _load_bench()
    (tmp_path / "summary.json").write_text(json.dumps({
        "device": "cuda", "dtype": "bfloat16", "machine": {"gpu": "Some GPU"}, "settings": {"size": "small"},
        "ppo_episodes_per_s": 10.0, "cache_samples_per_s": 400.0}))
    assert bench.main(["--out", str(tmp_path), "--estimate", "36000", "1440000", "0"]) == 0
    assert capsys.readouterr().out.strip() == (
        "Some GPU, bfloat16, small model: train 1.00 h + cache 1.00 h + eval 0.00 h = 2.00 h")
    assert bench.main(["--out", str(tmp_path / "nowhere"), "--estimate", "1", "1", "1"]) == 2


def test_the_table_of_a_gpu_summary(tmp_path, capsys):
    """What a GPU run prints (that machine is not here): its GPU, the memory rows, no CPU targets."""
    bench = _load_bench()
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
    bench.print_table(summary, tmp_path)
    out = capsys.readouterr().out
    for line in ("PPO step (GPT-2-small-sized, 32 episodes, 4×1 opt. steps): s", "PPO step: peak GPU memory, GiB",
                 "vLLM sampler: skipped (vllm is not installed (pip install vllm))",
                 "cuda, bfloat16: NVIDIA H100 80GB HBM3 (79 GiB), CUDA 12.8, 16 CPUs",
                 "hours of a run here ≈ (episodes / 16 + (cache + eval samples) / 900) / 3600"):
        assert line in out, line
    assert "7.5" in out and "target >=" not in out  # the CPU targets are not judged on a GPU
