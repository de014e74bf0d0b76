"""vbon_exp/analysis/gap_to_bon.py: the gap to BoN at matched KL, on hand-made results lines whose answers are known by
hand: BoN from the pool at N = 1, 2, 4 with rewards 0, 1, 3 and its own KLs 0.8 of log N − (N−1)/N (as ties lower
them), so a point at 0.8 of N = 3's continuous KL meets BoN at N* = 3 (the continuous shape, scaled to BoN's own
KLs), with BoN's reward 1 + 2·log2(3/2) (linear in log N); a point past N = 4's KL is marked, never extrapolated;
each point meets its own seed's BoN curve, or the seed means' where its seed has none. Then the curve through BoN's
exact values at N = 1, 2, 4, …, 64 of the synthetic task against BoN's exact values between them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import frame

from vbon_exp import analysis
from vbon_exp.analysis.gap_to_bon import at_kl
from vbon_exp.analysis.sets import student_t_quantile
from vbon_exp.analysis.tables import format_bon_gap, frontier_tables

Z = 1.959963984540054  # the normal 97.5% quantile
L = math.log2(1.5)  # the log-N share of N = 3 between 2 and 4, and of 1.5 between 1 and 2


def kl_of(n: float) -> float:
    return math.log(n) - (n - 1) / n


def own(n: float) -> float:
    """BoN's own KL on these hand-made lines: 0.8 of the continuous value (ties lower it)."""
    return 0.8 * kl_of(n)


def pool(seed, rewards=(0.0, 1.0, 3.0), win_rates=(0.5, 0.6, 0.8), ns=(1, 2, 4), ses=(0.0, 0.1, 0.3)) -> list[dict]:
    """BoN-from-the-pool lines of one seed: one per N, its KL BoN's own (`own`), beside the analytic value."""
    return [{"objective": "bon", "estimate": "cache", "n": n, "beta": 1 / (n - 1) if n > 1 else None,
             "kl": own(n), "kl_analytic": kl_of(n), "reward": r, "reward_se": se, "win_rate": w,
             "win_rate_se": se / 10, "seed": seed} for n, r, w, se in zip(ns, rewards, win_rates, ses)]


def trained(objective, beta, kl, reward, seed=0, win_rate=0.5, **extra) -> dict:
    return {"objective": objective, "beta": beta, "n": 1 / beta + 1, "kl": kl, "reward": reward,
            "reward_se": 0.01, "win_rate": win_rate, "win_rate_se": 0.002, "seed": seed, **extra}


def test_bon_values_at_a_points_kl_by_hand():
    points = frame(
        *pool(0),
        trained("vbon", 0.5, own(3), 1.5, win_rate=0.65),  # N* = 3: reward 1 + 2L, win rate 0.6 + 0.2L
        trained("vbon", 0.25, own(2), 0.4),  # N = 2's own KL exactly: BoN's N = 2 line
        trained("vbon", 0.125, own(1.5), 0.4),  # N* = 1.5: reward L
        trained("kl_rl", 0.5, -0.01, 0.1),  # no KL: N* = 1, π_ref's reward 0
        trained("kl_rl", 0.1, own(4) + 1e-6, 5.0),  # beyond N = 4's KL: marked, no BoN value
        trained("soft_bon", 0.5, own(3), 2.5, kl_analytic=kl_of(3)),  # an inference-time relative: a point
        {**pool(0)[2], "estimate": "sample", "reward": 9.0},  # BoN sampled afresh: neither the curve nor a point
    )
    gaps = analysis.bon_gap(points, per_seed=True).set_index(["objective", "beta"])
    assert sorted(gaps.index.get_level_values("objective")) == ["kl_rl", "kl_rl", "soft_bon", "vbon", "vbon", "vbon"]
    at3 = gaps.loc[("vbon", 0.5)]
    assert at3["bon_n_at_kl"] == pytest.approx(3.0, rel=1e-10)
    assert (at3["bon_reward_at_kl"], at3["bon_win_rate_at_kl"]) == pytest.approx((1 + 2 * L, 0.6 + 0.2 * L))
    assert (at3["reward_gap"], at3["win_rate_gap"]) == pytest.approx((2 * L - 0.5, 0.2 * L - 0.05))
    assert at3["bon_curve"] == "same seed" and not at3["beyond_pool"]
    assert gaps.loc[("vbon", 0.25), ["bon_n_at_kl", "bon_reward_at_kl"]].tolist() == pytest.approx([2.0, 1.0])
    assert gaps.loc[("vbon", 0.125), ["bon_n_at_kl", "bon_reward_at_kl"]].tolist() == pytest.approx([1.5, L])
    assert gaps.loc[("kl_rl", 0.5), ["bon_n_at_kl", "bon_reward_at_kl", "reward_gap"]].tolist() == [1.0, 0.0, -0.1]
    beyond = gaps.loc[("kl_rl", 0.1)]
    assert beyond["beyond_pool"] and beyond["bon_n_at_kl"] == math.inf
    assert np.isnan([beyond["bon_reward_at_kl"], beyond["bon_win_rate_at_kl"], beyond["reward_gap"],
                     beyond["win_rate_gap"]]).all()
    assert gaps.loc[("soft_bon", 0.5), "reward_gap"] == pytest.approx(1 + 2 * L - 2.5)


def test_a_point_that_is_bon_meets_bon_itself():
    """BoN's curve is at BoN's own KL, not log N − (N−1)/N: where ties make BoN(4) spend 0.51, not 0.64, a point
    with π_BoN(4)'s KL and reward has no gap and N* = 4 (at the analytic KL it met N* = 3.36: a gap of −0.64)."""
    points = frame(*pool(0), trained("bon_sft", 1 / 3, own(4), 3.0, win_rate=0.8))
    (gap,) = analysis.bon_gap(points, per_seed=True).to_dict("records")
    assert gap["bon_n_at_kl"] == pytest.approx(4.0)
    assert (gap["reward_gap"], gap["win_rate_gap"]) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_each_point_meets_its_own_seeds_curve_else_the_seed_means():
    points = frame(
        *pool(0), *pool(1, rewards=(0.0, 2.0, 4.0)),
        trained("vbon", 0.5, own(3), 1.5, seed=0),  # seed 0's curve at N = 3: 1 + 2L
        trained("vbon", 0.5, own(3), 2.0, seed=1),  # seed 1's: 2 + 2L
        trained("vbon", 0.5, own(3), 1.0, seed=2),  # no BoN of seed 2: the seed means' curve 0, 1.5, 3.5 → 1.5 + 2L
    )
    gaps = analysis.bon_gap(points, per_seed=True).set_index("seed")
    assert gaps["bon_reward_at_kl"].tolist() == pytest.approx([1 + 2 * L, 2 + 2 * L, 1.5 + 2 * L])
    assert gaps["bon_curve"].tolist() == ["same seed", "same seed", "seed mean"]
    means = analysis.bon_gap(points)
    (row,) = means.to_dict("records")  # one configuration, its three seeds averaged with the t-interval
    values = [2 * L - 0.5, 2 * L, 2 * L + 0.5]
    half = student_t_quantile(0.95, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert (row["reward_gap"], row["reward_gap_ci_low"], row["reward_gap_ci_high"]) == pytest.approx(
        (2 * L, 2 * L - half, 2 * L + half))
    assert (row["seeds"], row["seeds_in_pool"], row["beyond_pool"]) == (3, 3, False)
    assert row["bon_curve"] == "same seed, seed mean"


def test_one_seed_gets_the_runs_own_interval_and_a_beyond_seed_marks_its_configuration():
    """One seed: ± z·SE with the gap's SE √(SE_point² + SE_BoN²), BoN's SE interpolated as its value is (0.1 at
    N = 2, 0.3 at N = 4: 0.1 + 0.2L at N = 3). A configuration with a seed beyond the pool is marked beyond_pool; its
    mean gap is over the seeds within."""
    points = frame(*pool(0), *pool(1),
                   trained("vbon", 0.5, own(3), 1.5),
                   trained("kl_rl", 0.5, own(2), 0.5, seed=0), trained("kl_rl", 0.5, 3.0, 4.0, seed=1))
    means = analysis.bon_gap(points).set_index("objective")
    vbon = means.loc["vbon"]
    half = Z * math.hypot(0.01, 0.1 + 0.2 * L)
    assert (vbon["reward_gap"], vbon["reward_gap_ci_low"], vbon["reward_gap_ci_high"]) == pytest.approx(
        (2 * L - 0.5, 2 * L - 0.5 - half, 2 * L - 0.5 + half))
    kl_rl = means.loc["kl_rl"]
    assert kl_rl["beyond_pool"] and (kl_rl["seeds"], kl_rl["seeds_in_pool"]) == (2, 1)
    assert kl_rl["reward_gap"] == pytest.approx(0.5)


def test_sets_without_the_pool_get_no_rows_and_a_note():
    points = frame(*pool(0, ns=(4, 8), rewards=(3.0, 4.0), win_rates=(0.8, 0.9), ses=(0.1, 0.1)),
                   trained("vbon", 0.5, own(3), 1.5),  # below N = 4's KL and no N = 1 line: no BoN value
                   trained("vbon", 0.5, 0.7, 1.5, task="other"),  # a task without BoN lines
                   trained("bon_sft", 0.2, own(6), 3.0))  # N* = 6 between the pool's 4 and 8: 3 + log2(6/4)
    out = frontier_tables(points)
    gaps = out["bon_gap_points"].set_index(["task", "objective"])
    assert gaps.index.tolist() == [("synthetic", "bon_sft"), ("synthetic", "vbon")]
    assert gaps.loc[("synthetic", "bon_sft"), "bon_reward_at_kl"] == pytest.approx(3 + L)
    below = gaps.loc[("synthetic", "vbon")]
    assert not below["beyond_pool"] and np.isnan(below["bon_reward_at_kl"])
    assert any("other" in note and "no BoN-from-the-pool lines" in note for note in out["notes"])
    assert any("below BoN's KL at the pool's smallest N" in note for note in out["notes"])
    printed = format_bon_gap(out["bon_gap"])
    assert "bon_sft" in printed and "reward gap" in printed
    assert analysis.bon_gap(frame(trained("vbon", 0.5, 0.3, 1.0))).empty  # no BoN at all


def test_a_curve_without_n_1_starts_at_pi_refs_reward():
    """BoN swept over N = 2, 4 only (a β sweep): π_ref's point, N = 1 at KL 0, comes from the lines' `ref_reward` (the
    test cache's mean reward) with win rate ½, so a point below N = 2's KL still meets BoN's curve."""
    lines = [{**line, "ref_reward": 0.2} for line in pool(0) if line["n"] > 1]
    points = frame(*lines, trained("kl_rl", 1.0, own(1.5), 0.3))  # N* = 1.5
    (gap,) = analysis.bon_gap(points, per_seed=True).to_dict("records")
    assert gap["bon_n_at_kl"] == pytest.approx(1.5, rel=1e-10)
    assert gap["bon_reward_at_kl"] == pytest.approx(0.2 + L * (1.0 - 0.2))  # from π_ref's 0.2 to N = 2's 1, in log N
    assert gap["bon_win_rate_at_kl"] == pytest.approx(0.5 + L * (0.6 - 0.5))


@pytest.mark.parametrize("fixture", ["flat_synthetic_task", "tied_synthetic_task"])
def test_the_curve_stays_near_bons_exact_values_between_pool_sizes(fixture, request):
    """The curve through π_BoN's exact (KL, reward, win rate) at N = 1, 2, 4, …, 64 of the synthetic task (continuous,
    and tied: 5 reward levels), read at the exact KL of π_BoN at 61 real N between 1 and 64: within 0.02 of π_BoN's
    exact reward and win rate there (measured ≤ 0.016 on both tasks, ≤ 0.018 on the default task with 5 levels);
    interpolating in N at the analytic KL instead misses by up to 0.07 (continuous) and 0.15 (tied). Exact values,
    no draw: the test is deterministic."""
    oracle = request.getfixturevalue(fixture).oracle
    nodes = [1, 2, 4, 8, 16, 32, 64]
    curve = pd.DataFrame([{"n": float(n), **{k.removeprefix("exact_"): v for k, v in oracle.metrics(
        oracle.bon_log_probs(n)).items() if k in ("exact_kl", "exact_reward", "exact_win_rate")}} for n in nodes])
    curve = curve.assign(reward_se=0.0, win_rate_se=0.0).set_index("n")
    worst = {"reward": 0.0, "win_rate": 0.0}
    for n in np.exp(np.linspace(0, math.log(64), 61)):
        exact = oracle.metrics(oracle.bon_log_probs(float(n)))
        read = at_kl(curve, exact["exact_kl"])
        assert read["bon_n_at_kl"] == pytest.approx(n, rel=0.2)
        for metric in worst:
            worst[metric] = max(worst[metric], abs(read[f"bon_{metric}_at_kl"] - exact[f"exact_{metric}"]))
    print(fixture, worst)
    assert worst["reward"] <= 0.02 and worst["win_rate"] <= 0.02, worst

