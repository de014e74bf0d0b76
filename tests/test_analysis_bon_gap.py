"""vbon_exp/analysis/gap_to_bon.py: the gap to BoN at matched KL, on hand-made results lines whose answers are known by
hand: BoN from the pool at N = 1, 2, 4 with rewards 0, 1, 3, so a point at the analytic KL of N = 3 meets BoN's
reward 2 (linear in N); a point past N = 4's KL is marked, never extrapolated; each point meets its own seed's BoN
curve, or the seed means' where its seed has none."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import frame

from vbon_exp import analysis
from vbon_exp.analysis.gap_to_bon import bon_analytic_kl, n_at_kl
from vbon_exp.analysis.sets import student_t_quantile
from vbon_exp.analysis.tables import format_bon_gap, frontier_tables

Z = 1.959963984540054  # the normal 97.5% quantile


def kl_of(n: float) -> float:
    return math.log(n) - (n - 1) / n


def pool(seed, rewards=(0.0, 1.0, 3.0), win_rates=(0.5, 0.6, 0.8), ns=(1, 2, 4), ses=(0.0, 0.1, 0.3)) -> list[dict]:
    """BoN-from-the-pool lines of one seed: one per N, KL the analytic value."""
    return [{"objective": "bon", "estimate": "cache", "n": n, "beta": 1 / (n - 1) if n > 1 else None,
             "kl": kl_of(n), "kl_analytic": kl_of(n), "reward": r, "reward_se": se, "win_rate": w,
             "win_rate_se": se / 10, "seed": seed} for n, r, w, se in zip(ns, rewards, win_rates, ses)]


def trained(objective, beta, kl, reward, seed=0, win_rate=0.5, **extra) -> dict:
    return {"objective": objective, "beta": beta, "n": 1 / beta + 1, "kl": kl, "reward": reward,
            "reward_se": 0.01, "win_rate": win_rate, "win_rate_se": 0.002, "seed": seed, **extra}


def test_n_at_kl_inverts_the_analytic_kl():
    for n in (1.0, 1.5, 2.0, 3.0, 7.3, 64.0, 255.5):
        assert n_at_kl(float(bon_analytic_kl(n)), 256.0) == pytest.approx(n, rel=1e-10)
    assert n_at_kl(0.0, 4.0) == 1.0 and n_at_kl(-0.2, 4.0) == 1.0  # no KL: π_ref, BoN's N = 1
    assert n_at_kl(kl_of(4) + 1e-6, 4.0) == math.inf and math.isnan(n_at_kl(math.nan, 4.0))


def test_bon_values_at_a_points_kl_by_hand():
    points = frame(
        *pool(0),
        trained("vbon", 0.5, kl_of(3), 1.5, win_rate=0.65),  # N* = 3: BoN's reward (1 + 3)/2 = 2, win rate 0.7
        trained("vbon", 0.25, kl_of(2), 0.4),  # N* = 2 exactly: BoN's N = 2 line
        trained("kl_rl", 0.5, -0.01, 0.1),  # no KL: N* = 1, π_ref's reward 0
        trained("kl_rl", 0.1, kl_of(4) + 0.1, 5.0),  # beyond N = 4: marked, no BoN value
        trained("soft_bon", 0.5, kl_of(3), 2.5, kl_analytic=kl_of(3)),  # an inference-time relative: a point
        {**pool(0)[2], "estimate": "sample", "reward": 9.0},  # BoN sampled afresh: neither the curve nor a point
    )
    gaps = analysis.bon_gap(points, per_seed=True).set_index(["objective", "beta"])
    assert sorted(gaps.index.get_level_values("objective")) == ["kl_rl", "kl_rl", "soft_bon", "vbon", "vbon"]
    at3 = gaps.loc[("vbon", 0.5)]
    assert at3["bon_n_at_kl"] == pytest.approx(3.0, rel=1e-10)
    assert (at3["bon_reward_at_kl"], at3["bon_win_rate_at_kl"]) == pytest.approx((2.0, 0.7))
    assert (at3["reward_gap"], at3["win_rate_gap"]) == pytest.approx((0.5, 0.05))
    assert at3["bon_curve"] == "same seed" and not at3["beyond_pool"]
    assert gaps.loc[("vbon", 0.25), "bon_reward_at_kl"] == pytest.approx(1.0)
    assert gaps.loc[("kl_rl", 0.5), ["bon_n_at_kl", "bon_reward_at_kl", "reward_gap"]].tolist() == [1.0, 0.0, -0.1]
    beyond = gaps.loc[("kl_rl", 0.1)]
    assert beyond["beyond_pool"] and beyond["bon_n_at_kl"] == math.inf
    assert np.isnan([beyond["bon_reward_at_kl"], beyond["bon_win_rate_at_kl"], beyond["reward_gap"],
                     beyond["win_rate_gap"]]).all()
    assert gaps.loc[("soft_bon", 0.5), "reward_gap"] == pytest.approx(-0.5)


def test_each_point_meets_its_own_seeds_curve_else_the_seed_means():
    points = frame(
        *pool(0), *pool(1, rewards=(0.0, 2.0, 4.0)),
        trained("vbon", 0.5, kl_of(3), 1.5, seed=0),  # seed 0's curve at N = 3: 2
        trained("vbon", 0.5, kl_of(3), 2.0, seed=1),  # seed 1's: 3
        trained("vbon", 0.5, kl_of(3), 1.0, seed=2),  # no BoN of seed 2: the seed means' curve 0, 1.5, 3.5 → 2.5
    )
    gaps = analysis.bon_gap(points, per_seed=True).set_index("seed")
    assert gaps["bon_reward_at_kl"].tolist() == pytest.approx([2.0, 3.0, 2.5])
    assert gaps["bon_curve"].tolist() == ["same seed", "same seed", "seed mean"]
    means = analysis.bon_gap(points)
    (row,) = means.to_dict("records")  # one configuration, its three seeds averaged with the t-interval
    values = [0.5, 1.0, 1.5]
    half = student_t_quantile(0.95, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert (row["reward_gap"], row["reward_gap_ci_low"], row["reward_gap_ci_high"]) == pytest.approx(
        (1.0, 1.0 - half, 1.0 + half))
    assert (row["seeds"], row["seeds_in_pool"], row["beyond_pool"]) == (3, 3, False)
    assert row["bon_curve"] == "same seed, seed mean"


def test_one_seed_gets_the_runs_own_interval_and_a_beyond_seed_marks_its_configuration():
    """One seed: ± z·SE with the gap's SE √(SE_point² + SE_BoN²), BoN's SE interpolated as its value is (0.1 at
    N = 2, 0.3 at N = 4: 0.2 at N = 3). A configuration with a seed beyond the pool is marked beyond_pool; its mean
    gap is over the seeds within."""
    points = frame(*pool(0), *pool(1),
                   trained("vbon", 0.5, kl_of(3), 1.5),
                   trained("kl_rl", 0.5, kl_of(2), 0.5, seed=0), trained("kl_rl", 0.5, 3.0, 4.0, seed=1))
    means = analysis.bon_gap(points).set_index("objective")
    vbon = means.loc["vbon"]
    half = Z * math.hypot(0.01, 0.2)
    assert (vbon["reward_gap"], vbon["reward_gap_ci_low"], vbon["reward_gap_ci_high"]) == pytest.approx(
        (0.5, 0.5 - half, 0.5 + half))
    kl_rl = means.loc["kl_rl"]
    assert kl_rl["beyond_pool"] and (kl_rl["seeds"], kl_rl["seeds_in_pool"]) == (2, 1)
    assert kl_rl["reward_gap"] == pytest.approx(0.5)


def test_sets_without_the_pool_get_no_rows_and_a_note():
    points = frame(*pool(0, ns=(4, 8), rewards=(3.0, 4.0), win_rates=(0.8, 0.9), ses=(0.1, 0.1)),
                   trained("vbon", 0.5, kl_of(3), 1.5),  # below N = 4 and no N = 1 line: no BoN value
                   trained("vbon", 0.5, 0.7, 1.5, task="other"),  # a task without BoN lines
                   trained("bon_sft", 0.2, kl_of(6), 3.0))  # N* = 6: between the pool's 4 and 8
    out = frontier_tables(points)
    gaps = out["bon_gap_points"].set_index(["task", "objective"])
    assert gaps.index.tolist() == [("synthetic", "bon_sft"), ("synthetic", "vbon")]
    assert gaps.loc[("synthetic", "bon_sft"), "bon_reward_at_kl"] == pytest.approx(3.5)
    below = gaps.loc[("synthetic", "vbon")]
    assert not below["beyond_pool"] and np.isnan(below["bon_reward_at_kl"])
    assert any("other" in note and "no BoN-from-the-pool lines" in note for note in out["notes"])
    assert any("below the analytic KL of the pool's smallest N" in note for note in out["notes"])
    printed = format_bon_gap(out["bon_gap"])
    assert "bon_sft" in printed and "reward gap" in printed
    assert analysis.bon_gap(frame(trained("vbon", 0.5, 0.3, 1.0))).empty  # no BoN at all


def test_a_curve_without_n_1_starts_at_pi_refs_reward():
    """BoN swept over N = 2, 4 only (a β sweep): π_ref's point, N = 1 at KL 0, comes from the lines' `ref_reward` (the
    test cache's mean reward) with win rate ½, so a point below N = 2's KL still meets BoN's curve."""
    lines = [{**line, "ref_reward": 0.2} for line in pool(0) if line["n"] > 1]
    points = frame(*lines, trained("kl_rl", 1.0, kl_of(1.5), 0.3))
    (gap,) = analysis.bon_gap(points, per_seed=True).to_dict("records")
    assert gap["bon_n_at_kl"] == pytest.approx(1.5, rel=1e-10)
    assert gap["bon_reward_at_kl"] == pytest.approx(0.2 + 0.5 * (1.0 - 0.2))  # halfway from π_ref's 0.2 to N = 2's 1
    assert gap["bon_win_rate_at_kl"] == pytest.approx(0.5 + 0.5 * (0.6 - 0.5))
