"""Throughput bookkeeping and length-sorted scoring: every run's results line carries seconds per stage and the
sampling / scoring rates of each (numbers, never asserted against a time), and sorting pairs by length before
scoring never changes which reward lands on which row."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import seeded

from vbon_exp.modeling import Samples
from vbon_exp.rewards import RewardError, score


def _ragged_samples(n: int = 37) -> Samples:
    g = seeded(0)
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
