"""Throughput bookkeeping and length-sorted scoring: every run's results line carries seconds per stage and the
sampling / scoring rates of each (numbers, never asserted against a time), and sorting pairs by length before
scoring never changes which reward lands on which row."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from vbon_exp.modeling import Samples
from vbon_exp.rewards import RewardError, score


def _ragged_samples(n: int = 37) -> Samples:
    g = torch.Generator().manual_seed(0)
    lp, lr = 6, 9
    prompt_len = torch.randint(1, lp + 1, (n,), generator=g)
    resp_len = torch.randint(1, lr + 1, (n,), generator=g)
    prompt_mask = (torch.arange(lp)[None] >= lp - prompt_len[:, None]).long()  # left padded
    response_mask = (torch.arange(lr)[None] < resp_len[:, None]).long()  # right padded
    return Samples(torch.arange(n), torch.randint(0, 50, (n, lp), generator=g) * prompt_mask, prompt_mask,
                   torch.randint(0, 50, (n, lr), generator=g) * response_mask, response_mask)


class RowReward:
    """A reward that reads each row's own tokens (so a row mix-up shows), and records its batches' lengths."""

    name, fingerprint = "row-reward", "row-reward"

    def __init__(self, nan_rows=()):
        self.batches, self.nan_rows = [], set(nan_rows)

    def __call__(self, samples: Samples) -> torch.Tensor:
        lengths = samples.prompt_mask.sum(-1) + samples.response_mask.sum(-1)
        self.batches.append(lengths.tolist())
        r = (samples.response_ids * samples.response_mask).sum(-1).float() + 0.001 * lengths.float()
        bad = torch.tensor([int(i) in self.nan_rows for i in samples.prompt_index])
        return torch.where(bad, torch.full_like(r, float("nan")), r)


def test_scoring_sorts_by_length_and_restores_the_row_order():
    s = _ragged_samples()
    reward = RowReward()
    got = score(reward, s, batch_size=8)
    expected = RowReward()(s)
    assert torch.equal(got, expected)  # row i gets row i's reward
    flat = [x for batch in reward.batches for x in batch]
    assert flat == sorted(flat)  # batches were formed in length order


def test_a_non_finite_reward_names_the_original_rows():
    s = _ragged_samples()
    with pytest.raises(RewardError, match=r"row-reward.*returned nan.*rows \[5, 30\].*first bad row 5"):
        score(RowReward(nan_rows=(5, 30)), s, batch_size=64, what="unit test")


def test_results_line_has_seconds_and_throughput_per_stage(make_config, tmp_path):
    """A BoN run (cache build + evaluation) and an RLOO run (one update): the results line and the printed summary
    carry cache_build_s / train_s / eval_s and the generation and scoring rates of each stage."""
    from vbon_exp.run import run

    # a small synthetic task (3-token responses): its exact oracle enumerates 216 responses per prompt, not 7776
    small = "task.response_length=3"
    point = run(make_config("objective=bon", "objective.n=2", "objective.estimate=sample", "reference.m=32",
                            "eval.samples_per_prompt=16", "wandb.mode=disabled", "device=cpu", small),
                run_dir=tmp_path / "bon")
    for key in ("cache_build_s", "cache_build_gen_tok_s", "cache_build_score_samples_s", "setup_s", "train_s",
                "eval_s", "eval_gen_tok_s", "eval_score_samples_s"):
        assert isinstance(point.get(key), float) and point[key] > 0, key
    line = json.loads((tmp_path / "bon" / "results.jsonl").read_text().splitlines()[-1])
    assert line["eval_gen_tok_s"] == pytest.approx(point["eval_gen_tok_s"])

    # the cache is reused by a second run: no generation in that stage, so no rate (only its seconds)
    point = run(make_config("objective=kl_rl", "algo=rloo", "objective.beta=0.5", "reference.m=32",
                            "eval.samples_per_prompt=16", "train.max_updates=1", "wandb.mode=disabled", "device=cpu",
                            small),
                run_dir=tmp_path / "rloo")
    assert "cache_build_s" in point and "cache_build_gen_tok_s" not in point
    for key in ("train_s", "train_gen_tok_s", "train_score_samples_s", "train_update_tok_s", "eval_gen_tok_s"):
        assert isinstance(point.get(key), float) and point[key] > 0, key


def test_summary_line_prints_the_stages():
    from vbon_exp.run import _throughput_line

    text = _throughput_line({"cache_build_s": 1.5, "cache_build_gen_tok_s": 1234.0, "train_s": 2.0,
                             "train_update_tok_s": 99.0, "eval_s": 0.5, "eval_score_samples_s": 10.0})
    assert text == ("  stages: cache 1.5 s (1,234 gen tok/s)   train 2.0 s (99 update tok/s)   "
                    "eval 0.5 s (10 scored/s)")


def _load_bench():
    """scripts/bench.py as a module (it is a script, not part of the package)."""
    import importlib.util

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("vbon_bench_script", REPO_ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_runs_a_tiny_slice_and_writes_its_summary(tmp_path, monkeypatch, capsys):
    """`make bench` (scripts/bench.py main) end to end on a shrunken setting: the sampler comparison against
    transformers.generate and our RLOO step (TRL skipped: an optional extra), then the reference-cache child on a
    tiny cache. Checks the summary's structure and sanity (positive rates, counts that follow from the settings),
    never a time against a bound: the benchmark's numbers are not a test."""
    bench = _load_bench()
    # the same code paths at toy sizes: batch 8 × 3 new tokens, a 1-layer 16-wide GPT-2 with a 97-token vocabulary
    monkeypatch.setattr(bench, "VOCAB", 97)
    monkeypatch.setattr(bench, "BATCH", 8)
    monkeypatch.setattr(bench, "NEW_TOKENS", 3)
    monkeypatch.setattr(bench, "PROMPT_LEN", 4)
    monkeypatch.setattr(bench, "SIZES", {"tiny": {"n_layer": 1, "n_embd": 16, "n_head": 2}})
    assert bench.main(["--out", str(tmp_path), "--reps", "2", "--rl-steps", "2", "--skip-small", "--skip-trl",
                       "--skip-cache", "--skip-ppo"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    printed = capsys.readouterr().out
    assert f"written: {tmp_path / 'summary.json'}" in printed and "tiny GPT-2 (2×128): ours, tokens/s" in printed

    for key in ("sampler_tok_s_tiny", "generate_tok_s_tiny", "sampler_speedup_tiny", "step_s_ours"):
        assert isinstance(summary[key], float) and summary[key] > 0, key
    assert summary["sampler_speedup_tiny"] == pytest.approx(summary["sampler_tok_s_tiny"]
                                                            / summary["generate_tok_s_tiny"])
    # one timed call per rep and side, one RLOO step per --rl-steps (the warm-up excluded); rate = tokens / median
    assert len(summary["sampler_times_s_tiny"]) == len(summary["generate_times_s_tiny"]) == 2
    assert len(summary["step_times_s_ours"]) == 2 and all(t > 0 for t in summary["step_times_s_ours"])
    assert summary["sampler_tok_s_tiny"] == pytest.approx(8 * 3 / statistics.median(summary["sampler_times_s_tiny"]))
    assert summary["step_s_ours"] == pytest.approx(statistics.median(summary["step_times_s_ours"]))
    for skipped in ("sampler_tok_s_small", "step_s_trl", "bytes_per_cached_reward"):
        assert skipped not in summary, skipped
    assert summary["settings"] == {**summary["settings"], "batch": 8, "new_tokens": 3, "vocab": 97, "reps": 2,
                                   "rl_steps": 2}
    assert summary["machine"]["cpus"] >= 1 and summary["machine"]["torch_threads"] >= 1
    assert set(summary["machine"]["other_processes_cores_by_stage"]) == {"sampler tiny", "RLOO step"}
    # every target is reported; those whose stage ran carry a value and a verdict, the skipped ones None
    assert set(summary["targets"]) == set(bench.TARGETS)
    assert summary["targets"]["sampler_speedup_tiny"]["value"] == summary["sampler_speedup_tiny"]
    assert isinstance(summary["targets"]["sampler_speedup_tiny"]["met"], bool)
    assert summary["targets"]["bytes_per_cached_reward"] == {"bound": "<= 4", "value": None, "met": None}

    # the reference-cache stage's child (what `bench_cache` runs in a subprocess), in this process
    bench.build_cache_child(str(tmp_path / "cache"), prompts=3, m=5, new_tokens=2)
    cache = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cache["cache_rewards"] == 3 * 5  # every prompt × M reward, counted from the cache itself
    assert cache["cache_files"] >= 3  # a chunk, its checksum sidecar, meta.json
    assert cache["cache_bytes"] > 0 and cache["bytes_per_cached_reward"] == pytest.approx(
        cache["cache_bytes"] / cache["cache_rewards"])
    assert cache["peak_rss_mb"] > 0 and cache["cache_build_s"] > 0
