"""vbon_exp/analysis/inference_time.py: the inference-time tables (seed means per configuration and N′, the win-rate
table), their terminal form, the figures, and `make pareto-plot` writing them only where the results carry the
columns (hand-made results lines)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from analysis_helpers import assert_valid_png, frame, point, write_results

from vbon_exp.analysis import cli
from vbon_exp.analysis.inference_time import (
    format_inference,
    inference_columns,
    inference_tables,
    inference_time,
    win_rate_table,
)
from vbon_exp.analysis.sets import label_sets, set_columns
from vbon_exp.results import parse_inference_column


def inference(reward: float, win: float, exact: bool = True, ns=(1, 4)) -> dict:
    """The inference-time columns of one line: at N′ the reward reward + N′/10, win rate win + N′/100."""
    out = {}
    for n in ns:
        values = {"reward": reward + n / 10, "win_rate": win + n / 100, "win_rate_vs_ref": 0.6, "worst_reward": -n}
        for metric, value in values.items():
            out[f"inference_{metric}_{n}"], out[f"inference_{metric}_{n}_se"] = value, 0.01
            if exact:
                out[f"exact_inference_{metric}_{n}"] = value + 0.001
    return out


def lines() -> list[dict]:
    """vBoN and KL-RL at β = 1/3, two seeds each, with the columns; BoN from the pool without them."""
    return [point("vbon", 1 / 3, 1.0, 1.0, 0.5, seed=0, **inference(1.0, 0.50)),
            point("vbon", 1 / 3, 1.0, 1.2, 0.6, seed=1, **inference(1.2, 0.54)),
            point("kl_rl", 1 / 3, 1.0, 1.1, 0.7, seed=0, **inference(1.1, 0.45)),
            point("kl_rl", 1 / 3, 1.0, 1.1, 0.7, seed=1, **inference(1.1, 0.47)),
            point("bon", 1 / 3, 1.0, 1.3, 0.5, seed=0, estimate="cache", kl_analytic=0.4)]


def labelled(rows) -> pd.DataFrame:
    points = frame(*rows)
    return label_sets(points, set_columns(points))


def test_inference_columns_are_parsed_without_their_twins():
    assert parse_inference_column("inference_win_rate_vs_ref_16") == ("win_rate_vs_ref", 16)
    assert parse_inference_column("inference_win_rate_4") == ("win_rate", 4)
    assert parse_inference_column("inference_worst_reward_1") == ("worst_reward", 1)
    for other in ("inference_win_rate_4_se", "exact_inference_reward_4", "inference_bon_pool_m", "reward"):
        assert parse_inference_column(other) is None
    assert set(inference_columns(labelled(lines()))) == {(m, n) for m in ("reward", "win_rate", "win_rate_vs_ref",
                                                                          "worst_reward") for n in (1, 4)}


def test_seed_means_per_configuration_and_n_prime():
    long = inference_time(labelled(lines()))
    assert sorted(zip(long["objective"], long["inference_n"])) == [("kl_rl", 1), ("kl_rl", 4), ("vbon", 1),
                                                                   ("vbon", 4)]  # BoN from the pool: no rows
    vbon4 = long[(long["objective"] == "vbon") & (long["inference_n"] == 4)].iloc[0]
    assert vbon4["seeds"] == 2
    assert vbon4["inference_reward"] == pytest.approx(1.1 + 0.4)
    assert vbon4["inference_win_rate"] == pytest.approx(0.52 + 0.04)
    assert vbon4["exact_inference_win_rate"] == pytest.approx(0.561)
    # two seeds: the t-interval, mean ± 12.71·s/√2, with s the SD of 0.54 and 0.58
    half = 12.706 * (0.04 / math.sqrt(2)) / math.sqrt(2)
    assert vbon4["inference_win_rate_ci_high"] - vbon4["inference_win_rate"] == pytest.approx(half, rel=1e-3)
    # the exact values differ between the seeds' policies: the same interval over seeds
    assert vbon4["exact_inference_win_rate_ci_high"] - vbon4["exact_inference_win_rate"] == pytest.approx(half,
                                                                                                         rel=1e-3)


def test_one_seed_takes_the_runs_own_se():
    long = inference_time(labelled([point("vbon", 1 / 3, 1.0, 1.0, 0.5, **inference(1.0, 0.5))]))
    row = long[long["inference_n"] == 1].iloc[0]
    assert row["inference_reward_ci_high"] - row["inference_reward"] == pytest.approx(1.95996 * 0.01, rel=1e-4)
    assert math.isnan(row["exact_inference_reward_ci_low"])  # an exact value of one run: no interval


def test_win_rate_table_and_its_terminal_form():
    tables = inference_tables(labelled(lines()))
    table = win_rate_table(tables["inference_time"])
    assert table["objective"].tolist() == ["kl_rl", "vbon"]
    assert table.loc[table["objective"] == "kl_rl", "win_rate_4"].item() == pytest.approx(0.46 + 0.04)
    assert table.loc[table["objective"] == "vbon", "exact_win_rate_1"].item() == pytest.approx(0.531)
    text = format_inference(tables)
    assert "inference-time win rate" in text and "N′=1" in text and "N′=4" in text
    assert "0.560 [" in text and "(exact 0.561)" in text


def test_without_the_columns_there_is_nothing():
    points = labelled([point("vbon", 1 / 3, 1.0, 1.0, 0.5), point("kl_rl", 1 / 3, 1.0, 1.1, 0.7)])
    assert inference_tables(points) == {} and format_inference({}) == ""


def test_pareto_plot_writes_the_tables_and_figures_only_with_the_columns(tmp_path, capsys):
    runs = tmp_path / "sweep"
    for k, row in enumerate([*lines(), point("vbon", 1 / 7, 1.0, 1.5, 0.9, **inference(1.5, 0.6, exact=False))]):
        write_results(runs / str(k) / "results.jsonl", row)
    assert cli.main([str(runs), "--wandb-mode", "disabled"]) == 0
    printed = capsys.readouterr().out
    out = runs / "pareto"
    assert "inference-time win rate" in printed and "inference-time win rate" in (out / "report.txt").read_text()
    long = pd.read_csv(out / "inference_time.csv")
    assert len(long) == 6 and set(long["inference_n"]) == {1, 4}
    assert len(pd.read_csv(out / "inference_win_rate.csv")) == 3
    for stem in ("inference_reward_vs_n", "inference_win_rate_vs_n"):
        assert_valid_png(out / f"{stem}.png")
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"

    plain = tmp_path / "plain"
    write_results(plain / "0" / "results.jsonl", point("vbon", 1 / 3, 1.0, 1.0, 0.5))
    assert cli.main([str(plain), "--wandb-mode", "disabled"]) == 0
    assert "inference-time" not in capsys.readouterr().out
    assert not list((plain / "pareto").glob("inference_*"))
