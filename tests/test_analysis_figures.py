"""vbon_exp/analysis/figures.py (and drawing.py): BoN's points as the targets, distinct styles and legends beside
crowded panels, the figure against evaluation temperature, the judges' figures, and the gap-to-BoN figure."""

from __future__ import annotations

import math
import numpy as np
import pandas as pd
import pytest
from analysis_helpers import assert_valid_png, frame, make_temperature_sweep, point, write_results

from vbon_exp.analysis import cli, figures
from vbon_exp.analysis.drawing import LEGEND_WIDTH_IN, objective_styles
from vbon_exp.analysis.load import load_points
from vbon_exp.analysis.sets import COMPARABLE
from vbon_exp.analysis.tables import frontier_tables


def test_plot_links_each_distilling_point_to_its_bon_target():
    points = frame(
        {"objective": "bon", "n": 4, "target_n": 4, "reward": 1.0, "kl": 0.6, "kl_analytic": 0.64},
        {"objective": "bon", "n": 16, "target_n": 16, "reward": 2.0, "kl": 1.8, "kl_analytic": 1.83},
        {"objective": "vbon", "n": 4, "target_n": 4, "reward": 1.1, "kl": 0.7},
        {"objective": "vbon", "n": 8, "target_n": 8, "reward": 1.5, "kl": 1.2},  # no BoN at N = 8
        {"objective": "kl_rl", "n": 4, "reward": 2.5, "kl": 3.0},  # aims at π*, not π_BoN
    )
    out = frontier_tables(points, None, None)
    fig = figures.plot_vs_kl(out["seed_means"], out["points"], "reward", "reward", title="t", frontier=True)
    arrows = [text for text in fig.axes[0].texts if getattr(text, "arrow_patch", None) is not None]
    assert [(arrow.xyann, arrow.xy) for arrow in arrows] == [((0.7, 1.1), (0.6, 1.0))]


def test_the_whole_family_gets_distinct_colours_and_a_legend_beside_the_points():
    """Eleven methods (the paper's six and the BOND family): tab10 alone would give two of them one colour, and
    their legend (13 entries) inside the panel would cover the points, so it goes beside it in a wider figure."""
    names = [f"method{i:02d}" for i in range(11)]
    points = frame(*({"objective": name, "n": 4, "reward": 1.0 + i, "kl": 0.5 + i} for i, name in enumerate(names)))
    styles = objective_styles(points)
    assert len({colour for colour, _, _ in styles.values()}) == 11
    out = frontier_tables(points, None, None)
    fig = figures.plot_vs_kl(out["seed_means"], out["points"], "reward", "reward", title="t", frontier=True)
    ax = fig.axes[0]
    fig.canvas.draw()
    legend, panel = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= panel.x1  # beside, not over, the points
    assert fig.get_size_inches()[0] == pytest.approx(7.2 + LEGEND_WIDTH_IN)
    few = frame({"objective": "a", "n": 4, "reward": 1.0, "kl": 0.5},
                {"objective": "b", "n": 4, "reward": 2.0, "kl": 1.0})
    out = frontier_tables(few, None, None)
    fig = figures.plot_vs_kl(out["seed_means"], out["points"], "reward", "reward", title="t", frontier=True)
    fig.canvas.draw()
    assert fig.axes[0].get_legend().get_window_extent().x1 <= fig.axes[0].get_window_extent().x1  # short: inside


# ------------------------------------------------------------------------------------------------ eval.temperatures


def _series(fig) -> dict:
    """Label -> (x, y) of each errorbar series in the first panel (the reward panel)."""
    ax = fig.axes[0]
    return {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers}


def vs_temperature(points: pd.DataFrame):
    """The temperature figure of `points`, one set per evaluation temperature."""
    out = frontier_tables(points, list(COMPARABLE), None)
    return figures.plot_vs_temperature(out["seed_means"], out["points"])


def test_vs_temperature_is_against_the_evaluation_temperature_per_trained_policy(tmp_path):
    """Policies trained at one sampling temperature (0.7) and evaluated at four (eval.temperatures): the figure is
    drawn (one sampling temperature, four evaluation temperatures), one series per trained policy, x the
    evaluation temperature."""
    runs = tmp_path / "sweep"
    evals = (0.25, 0.5, 0.75, 1.0)
    for k, objective in enumerate(("vbon", "kl_rl")):
        write_results(runs / str(k) / "results.jsonl", *(
            point(objective, 1 / 3, 0.7, reward=k + t, kl=0.5 + t, eval_temperature=t) for t in evals))
    assert cli.main([str(runs), "--wandb-mode", "disabled"]) == 0  # four evaluation temperatures: four sets
    assert_valid_png(runs / "pareto" / "vs_temperature.png")
    fig = vs_temperature(load_points(runs))
    assert fig.axes[0].get_xlabel() == "evaluation temperature"
    assert _series(fig) == {"vbon, trained at T = 0.7": (list(evals), [0 + t for t in evals]),
                            "kl_rl, trained at T = 0.7": (list(evals), [1 + t for t in evals])}


def test_vs_temperature_separates_policies_trained_at_different_temperatures(tmp_path):
    runs = tmp_path / "sweep"
    for k, trained in enumerate((0.7, 1.0)):
        write_results(runs / str(k) / "results.jsonl", *(
            point("vbon", 1 / 3, trained, reward=trained * 10 + t, kl=0.5, eval_temperature=t) for t in (0.5, 1.0)))
    series = _series(vs_temperature(load_points(runs)))
    assert series == {"vbon, trained at T = 0.7": ([0.5, 1.0], [7.5, 8.0]),
                      "vbon, trained at T = 1": ([0.5, 1.0], [10.5, 11.0])}


def test_lines_without_eval_temperature_were_evaluated_at_the_sampling_temperature(tmp_path):
    points = load_points(make_temperature_sweep(tmp_path))
    ok = points[points["status"] == "ok"]
    assert ok["eval_temperature"].tolist() == ok["temperature"].tolist()
    series = _series(vs_temperature(points))  # a sampling-temperature sweep: one series per (objective, N)
    assert series["vbon, N = 4"][0] == [0.7, 1.0]


# ------------------------------------------------------------------------------------------------ eval.judges


def test_judge_columns_get_their_own_figures(tmp_path):
    runs = tmp_path / "sweep"
    judged = {"judge/vader/reward": 0.3, "judge/vader/reward_se": 0.01, "judge/vader/win_rate": 0.6,
              "judge/vader/win_rate_se": 0.02}
    write_results(runs / "0" / "results.jsonl", point("vbon", 1 / 3, 1.0, 1.0, 0.5, **judged))
    write_results(runs / "1" / "results.jsonl", point("kl_rl", 1 / 3, 1.0, 1.2, 0.9))  # an unjudged run
    out = frontier_tables(load_points(runs), None, None)
    drawn = figures.judge_figures(out["seed_means"], out["points"])
    assert sorted(drawn) == ["judge_vader_reward_vs_kl", "judge_vader_win_rate_vs_kl"]
    ax = drawn["judge_vader_win_rate_vs_kl"].axes[0]
    assert [(list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers] == [([0.5], [0.6])]
    assert cli.main([str(runs), "--wandb-mode", "disabled"]) == 0
    for stem in drawn:
        assert_valid_png(runs / "pareto" / f"{stem}.png")
    table = pd.read_csv(runs / "pareto" / "points.csv").set_index("objective")
    assert table.loc["vbon", "judge/vader/win_rate"] == 0.6 and np.isnan(table.loc["kl_rl", "judge/vader/win_rate"])


# ------------------------------------------------------------------------------------------------ the gap to BoN


def test_bon_gap_figure_draws_the_seed_means_and_leaves_out_points_beyond_the_pool():
    bon = [{"objective": "bon", "estimate": "cache", "n": n, "kl_analytic": 0.0, "reward": r,
            "kl": math.log(n) - (n - 1) / n,  # the gap reads BoN's curve at BoN's own KL
            "win_rate": 0.5 + r / 10, "seed": seed} for seed in (0, 1) for n, r in ((1, 0.0), (2, 1.0), (4, 3.0))]
    points = frame(*bon,
                   *({"objective": "vbon", "beta": 0.5, "reward": 1.0 + seed, "kl": 0.5, "seed": seed,
                      "win_rate": 0.6} for seed in (0, 1)),
                   {"objective": "kl_rl", "beta": 0.1, "reward": 5.0, "kl": 9.0, "win_rate": 0.9})  # beyond N = 4
    out = frontier_tables(points, None, None)
    fig = figures.plot_bon_gap(out["bon_gap"], out["bon_gap_points"], out["points"])
    assert len(fig.axes) == 2 and "reward" in fig.axes[0].get_ylabel() and "win rate" in fig.axes[1].get_ylabel()
    (series,) = fig.axes[0].containers  # vbon alone: kl_rl's point is beyond the pool
    mean_gap = out["bon_gap"].set_index("objective").loc["vbon", "reward_gap"]
    assert series.lines[0].get_ydata().tolist() == [pytest.approx(mean_gap)] and "vbon" in series.get_label()
    assert [line.get_ydata()[0] for line in fig.axes[0].lines if line.get_label() == "BoN at the same KL"] == [0.0]
