"""vbon_exp/analysis/sets.py: comparable sets (split by default, pooled on request) and the seed statistics
(Student-t quantiles against scipy, the mean and 95% interval of a configuration's seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import frame

from vbon_exp.analysis import sets
from vbon_exp.analysis.load import AnalysisError
from vbon_exp.analysis.tables import frontier_tables


@pytest.mark.parametrize("column, values", [
    ("temperature", (1.0, 0.7)),  # no eval_temperature column: the sampling temperature stands in
    ("eval_temperature", (1.0, 0.7)),
    ("reward_output", ("prob", "logit")),
    ("m", (512, 64)),
])
def test_default_grouping_splits_mixed_sets_and_group_by_pools_them(column, values):
    """Points at different evaluation temperatures, reward outputs or M are never on one frontier by default: one
    set (frontier, panel) each; pooling them takes an explicit --group-by that leaves the column out."""
    points = frame(*({"objective": "vbon", "reward": 1.0 + k, "kl": 1.0 + k, column: value}
                     for k, value in enumerate(values)))
    split = sets.label_sets(points, sets.set_columns(points, None))
    assert split["set"].nunique() == 2
    assert frontier_tables(points, None, None)["points"]["on_frontier"].tolist() == [True, True]  # each alone
    assert sets.set_columns(points, None) == sets.set_columns(points, list(sets.COMPARABLE))
    pooled = sets.label_sets(points, sets.set_columns(points, ["task"]))
    assert pooled["set"].tolist() == ["synthetic"] * 2
    assert frontier_tables(points, ["task"], None)["points"]["on_frontier"].tolist() == [True, True]


def test_several_tasks_are_separate_sets_by_default():
    points = frame({"task": "a", "objective": "vbon", "reward": 1.0, "kl": 1.0},
                   {"task": "b", "objective": "vbon", "reward": 2.0, "kl": 2.0, "m": 64})
    labelled = sets.label_sets(points, sets.set_columns(points, None))
    assert labelled["set"].tolist() == ["a · T_eval=1 · M=512", "b · T_eval=1 · M=64"]


def test_task_variants_are_separate_sets_and_old_lines_are_one_default_variant():
    """Runs of two task variants in one directory (the synthetic task with reward_levels=5 beside its defaults) get a
    frontier and a BoN curve each; lines from before the `task_variant` column and new lines of the defaults (None)
    are one default variant. The label shows a variant only where its task has several: a directory of one variant
    keeps its labels."""
    levels = {"task_variant": "reward_levels=5"}

    def bon(n, reward, **extra):
        return {"objective": "bon", "estimate": "cache", "n": n, "kl_analytic": 0.0, "kl": 0.4 * (n - 1),
                "reward": reward, **extra}

    at = 0.4 * (math.log(1.5) - 1 / 3) / (math.log(2) - 1 / 2)  # BoN's KL at N = 1.5 on these curves

    points = frame(bon(1, 0.0), bon(2, 1.0), bon(1, 0.0, **levels), bon(2, 3.0, **levels),  # old lines: no column
                   {"objective": "vbon", "reward": 0.4, "kl": at},
                   {"objective": "kl_rl", "reward": 0.3, "kl": at, "task_variant": None},
                   {"objective": "vbon", "reward": 0.2, "kl": at, **levels})
    labelled = sets.label_sets(points, sets.set_columns(points, None))
    default, tied = "synthetic · defaults · T_eval=1 · M=512", "synthetic · reward_levels=5 · T_eval=1 · M=512"
    assert labelled["set"].tolist() == [default, default, tied, tied, default, default, tied]
    # each point meets its own variant's BoN curve at N* = 1.5, log2(1.5) of the way to N = 2's reward (pooled, the
    # curves would average: 2·log2(1.5))
    gaps = frontier_tables(points, None, None)["bon_gap_points"]
    share = math.log2(1.5)
    assert dict(zip(gaps["objective"] + " " + gaps["set"], gaps["bon_reward_at_kl"])) == pytest.approx(
        {f"vbon {default}": share, f"kl_rl {default}": share, f"vbon {tied}": 3 * share})
    on = frontier_tables(points, None, None)["points"].set_index(["objective", "reward"])["on_frontier"]
    assert on[("vbon", 0.2)]  # dominated by the default variant's vBoN point only if the two shared a frontier
    old = frame({"objective": "vbon", "reward": 1.0, "kl": 1.0}, {"objective": "kl_rl", "reward": 2.0, "kl": 2.0})
    assert sets.label_sets(old, sets.set_columns(old, None))["set"].tolist() == ["synthetic · T_eval=1 · M=512"] * 2
    assert sets.label_sets(points, sets.set_columns(points, ["task"]))["set"].nunique() == 1


def test_group_by_rejects_unknown_columns():
    with pytest.raises(AnalysisError, match="objective is not one of"):
        sets.set_columns(frame({"objective": "vbon", "reward": 1.0, "kl": 1.0}), ["task", "objective"])


def test_student_t_quantile_matches_scipy():
    from scipy import stats

    for df in range(1, 31):
        assert sets.student_t_quantile(0.95, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10)
    assert sets.student_t_quantile(0.9, 4) == pytest.approx(stats.t.ppf(0.95, 4), rel=1e-10)


T2 = math.sqrt(2) * 0.95 / math.sqrt(1 - 0.95**2)  # t_{0.975, 2}: with 2 df, P(|T| ≤ t) = t/√(t² + 2)
Z = 1.959963984540054  # the normal 97.5% quantile


def test_seed_aggregation_mean_and_interval():
    points = frame(
        *({"objective": "a", "beta": 0.5, "seed": s, "reward": r, "reward_se": 0.05, "kl": k}
          for s, r, k in ((0, 1.0, 0.1), (1, 2.0, 0.2), (2, 4.0, 0.3))),
        {"objective": "a", "beta": 0.25, "seed": 0, "reward": 9.0, "kl": 3.0},  # another β: another point
        {"objective": "b", "beta": 0.5, "reward": 1.5, "reward_se": 0.1, "kl": 0.4, "kl_se": 0.02,
         "exact_reward": 1.4},
        {"objective": "b", "beta": 0.5, "seed": 1, "reward": 7.0, "kl": 0.4, "status": "failed"},  # not averaged
    )
    configs = frontier_tables(points, None, None)["seed_means"].set_index(["objective", "beta"])
    assert len(configs) == 3
    a = configs.loc[("a", 0.5)]
    assert (a["seeds"], a["runs"]) == (3, 3)
    # rewards 1, 2, 4: mean 7/3, sample variance ((4/3)² + (1/3)² + (5/3)²)/2 = 7/3
    half = T2 * math.sqrt(7 / 3) / math.sqrt(3)
    assert a["reward"] == pytest.approx(7 / 3)
    assert (a["reward_ci_low"], a["reward_ci_high"]) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    half_kl = T2 * 0.1 / math.sqrt(3)  # KLs 0.1, 0.2, 0.3: s = 0.1
    assert (a["kl"], a["kl_ci_low"], a["kl_ci_high"]) == pytest.approx((0.2, 0.2 - half_kl, 0.2 + half_kl))
    b = configs.loc[("b", 0.5)]  # one seed: the run's own interval ± z·SE; none for an exact value
    assert b["seeds"] == 1 and (b["reward_ci_low"], b["reward_ci_high"]) == pytest.approx((1.5 - Z * 0.1,
                                                                                          1.5 + Z * 0.1))
    assert (b["kl_ci_low"], b["kl_ci_high"]) == pytest.approx((0.4 - Z * 0.02, 0.4 + Z * 0.02))
    assert b["exact_reward"] == 1.4 and np.isnan(b["exact_reward_ci_low"]) and np.isnan(b["exact_reward_ci_high"])


def test_runs_record_their_task_variant(tmp_path):
    """The column the sets read, as run.py writes it: None for a task's defaults, the task keys off their defaults
    otherwise, and a language-model task's reference and reward models."""
    from conftest import compose_cfg

    from vbon_exp.config import validate
    from vbon_exp.run import base_point

    def variant(*overrides):
        return base_point(validate(compose_cfg(tmp_path, *overrides)))["task_variant"]

    assert variant() is None and variant("sampling.temperature=0.7") is None
    assert variant("task.reward_levels=5") == "reward_levels=5"
    assert variant("task.reward_levels=5", "task.model_seed=3") == "model_seed=3 · reward_levels=5"
    assert variant("task=imdb") == "reference=gpt2-imdb · reward_model=distilbert-imdb"
    # a sweep re-run into a directory skips a member only when its variant finished there too
    from vbon_exp.results import finished_lines, write_result

    ids = base_point(validate(compose_cfg(tmp_path)))
    write_result(tmp_path / "run", {**{k: v for k, v in ids.items() if k != "task_variant"}, "status": "ok"})  # old
    assert len(finished_lines(tmp_path / "run", ids)) == 1
    tied = base_point(validate(compose_cfg(tmp_path, "task.reward_levels=5")))
    assert finished_lines(tmp_path / "run", tied) == []
