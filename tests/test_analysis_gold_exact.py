"""vbon_exp/analysis/gold_exact.py on hand-made curves and results lines whose answers are known by hand: HedgeTune's
argmax on each gold curve, whether it is interior, what optimising to the curve's end loses; the seed means of the
exact gold values; and `make pareto-plot` writing hedgetune.csv and gold_vs_kl.png from results files alone."""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import assert_valid_png, frame, write_results

from vbon_exp.analysis.cli import main
from vbon_exp.analysis.gold_exact import format_hedgetune, gold_seed_means, hedgetune_table
from vbon_exp.results import write_exact_frontier


def curve(parameter, grid, gold, kl=None):
    kl = kl or [0.1 * i for i in range(len(grid))]
    return {parameter: grid, "kl": kl, "reward": [1.0 + k for k in kl], "win_rate": [0.5] * len(grid),
            "gold_reward": gold, "gold_win_rate": [0.5 + g / 10 for g in gold]}


CURVES = {
    "gold_bon": curve("n", [1, 2, 3, 4, 5], [0.0, 0.3, 0.5, 0.4, 0.1]),  # peak at N = 3, then hacked
    "gold_best_of_poisson": curve("mu", [0.0, 1.0, 2.0], [0.0, 0.2, 0.6]),  # still rising at the grid's end
    "gold_soft_bon_n16": curve("lam", [10.0, 1.0, 0.1], [0.0, 0.7, 0.2]),
    "gold_soft_bon_n4": curve("lam", [10.0, 1.0, 0.1], [0.0, 0.1, 0.3]),
    "optimum_reward": {"kl": [0.0, 1.0], "reward": [0.0, 2.0]},  # not a gold curve
}


def test_hedgetune_finds_each_curves_gold_optimum():
    table = hedgetune_table({"synthetic · T_eval=1 · M=512": CURVES}).set_index("curve")
    assert list(table.index) == ["gold_bon", "gold_best_of_poisson", "gold_soft_bon_n4", "gold_soft_bon_n16"]
    bon = table.loc["gold_bon"]
    assert (bon["parameter"], bon["value"], bon["interior"]) == ("n", 3, True)
    assert bon["gold_reward"] == 0.5 and bon["kl"] == pytest.approx(0.2) and bon["reward"] == pytest.approx(1.2)
    assert bon["gold_reward_at_end"] == 0.1 and bon["gold_loss_at_end"] == pytest.approx(0.4)
    bop = table.loc["gold_best_of_poisson"]
    assert (bop["value"], bop["interior"], bop["gold_loss_at_end"]) == (2.0, False, 0.0)
    soft = table.loc["gold_soft_bon_n16"]
    assert (soft["parameter"], soft["value"], soft["n"], soft["interior"]) == ("lam", 1.0, 16, True)
    text = format_hedgetune(table.reset_index())
    assert "BoN over N" in text and "n = 3" in text and "(at the grid's end)" in text


def test_gold_seed_means_average_the_exact_gold_values():
    rows = [{"objective": "vbon", "beta": 1 / 3, "n": 4.0, "seed": s, "reward": 1.0, "kl": 0.5, "exact_kl": 0.4 + s,
             "exact_reward": 1.0, "exact_gold_reward": g, "exact_gold_win_rate": 0.6, "exact_win_rate": 0.7}
            for s, g in ((0, 0.2), (1, 0.4))]
    points = frame(*rows).assign(set="synthetic")
    means = gold_seed_means(points)
    assert len(means) == 1 and means["seeds"].iloc[0] == 2
    assert means["exact_gold_reward"].iloc[0] == pytest.approx(0.3) and means["exact_kl"].iloc[0] == pytest.approx(0.9)
    assert gold_seed_means(frame(*[{k: v for k, v in rows[0].items() if not k.startswith("exact_gold")}])).empty


def test_pareto_plot_writes_hedgetune_and_the_gold_figure(tmp_path):
    runs = tmp_path / "sweep"
    for k, (objective, n, gold) in enumerate((("bon", 4.0, 0.5), ("best_of_poisson", 4.0, 0.55), ("vbon", 4.0, 0.45))):
        run_dir = runs / str(k)
        write_results(run_dir / "results.jsonl", {
            "task": "synthetic", "objective": objective, "objective_label": objective, "beta": 1 / 3, "n": n,
            "temperature": 1.0, "eval_temperature": 1.0, "m": 512, "seed": 0, "status": "ok", "reward": 1.0,
            "reward_se": 0.01, "kl": 0.6, "kl_se": 0.01, "win_rate": 0.7, "win_rate_se": 0.01, "exact_kl": 0.62,
            "exact_reward": 1.01, "exact_win_rate": 0.71, "exact_gold_reward": gold, "exact_gold_win_rate": 0.6,
            "run_dir": str(run_dir)})
        write_exact_frontier(run_dir, 1.0, CURVES, {"task": {"name": "synthetic"}, "temperature": 1.0})
    assert main([str(runs), "--wandb-mode", "disabled"]) == 0
    table = pd.read_csv(runs / "pareto" / "hedgetune.csv")
    assert set(table["curve"]) == {"gold_bon", "gold_best_of_poisson", "gold_soft_bon_n4", "gold_soft_bon_n16"}
    assert table.set_index("curve").loc["gold_bon", "value"] == 3
    assert_valid_png(runs / "pareto" / "gold_vs_kl.png")
    assert "HedgeTune" in (runs / "pareto" / "report.txt").read_text()
