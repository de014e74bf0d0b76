"""vbon_exp/analysis/cli.py (`make pareto-plot`, scripts/pareto_plot.py, `python -m vbon_exp.analysis`): the tables
and plots written, mixed sets split and pooled on request, wandb projects as a source (fake runs, no server), and
the errors (exit 2, one message, no traceback)."""

from __future__ import annotations

import math
import subprocess
import sys
import types

import pandas as pd
import pytest
from analysis_helpers import (
    REPO_ROOT,
    assert_valid_png,
    brute_force_frontier,
    fake_runs,
    make_temperature_sweep,
    point,
    write_results,
)

from vbon_exp.analysis import cli

SCRIPT = REPO_ROOT / "scripts" / "pareto_plot.py"


@pytest.fixture
def temperature_sweep(tmp_path):
    return make_temperature_sweep(tmp_path)


def test_cli_writes_tables_and_plots(temperature_sweep, tmp_path, capsys):
    out = tmp_path / "plots"
    assert cli.main([str(temperature_sweep), "--out", str(out), "--wandb-mode", "disabled",
                     "--group-by", "task,eval_temperature"]) == 0
    printed = capsys.readouterr().out
    assert "frontier frequency" in printed and "ConfigError" in printed and "2 comparable set(s)" in printed

    points = pd.read_csv(out / "points.csv")
    assert len(points) == 13
    failed = points[points["status"] == "failed"]
    assert len(failed) == 1 and failed["error_type"].item() == "ConfigError" and not failed["on_frontier"].item()
    ok = points[points["status"] == "ok"]
    assert sorted(ok["set"].unique()) == ["synthetic · T_eval=0.7", "synthetic · T_eval=1"]  # M: not grouped by
    frontier = pd.read_csv(out / "frontier.csv")
    for set_label, mine in ok.groupby("set"):  # one seed: the frontier of the seed means is the points'
        expected = brute_force_frontier(mine["reward"], mine["kl"])
        assert mine["on_frontier"].tolist() == expected.tolist()
        assert sorted(frontier.loc[frontier["set"] == set_label, "results_files"]) == sorted(
            mine.loc[expected, "results_file"])
    assert frontier.groupby("set")["kl"].apply(lambda kl: kl.is_monotonic_increasing).all()

    frequency = pd.read_csv(out / "frontier_frequency.csv")
    assert frequency.groupby("objective")["points"].sum().to_dict() == {"bon": 4, "vbon": 4, "kl_rl": 4}
    plotted = frequency[frequency["points"] > 0]  # (the failed line, without temperature and M, is a set apart)
    assert (plotted["seeds"] == 1).all() and frequency["ci_low"].isna().all()  # one seed: no interval
    assert (frequency["on_frontier_mean"] * frequency["points"]).sum() == ok["on_frontier"].sum()
    assert frequency.groupby("objective")["failed"].sum()["bon"] == 1
    seed_means = pd.read_csv(out / "seed_means.csv")
    assert len(seed_means) == 12 and (seed_means["seeds"] == 1).all()
    assert not (out / "regret.csv").exists() and not (out / "exact_vs_kl.png").exists()  # no exact values
    # BoN's lines here are not from the pool (no `estimate: cache`): no gap to BoN, and a note says why
    assert not (out / "bon_gap.csv").exists() and "no BoN-from-the-pool lines" in printed

    for stem in ("reward_vs_kl", "win_rate_vs_kl", "vs_temperature"):  # two temperatures: the temperature plot
        assert_valid_png(out / f"{stem}.png")
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


def test_cli_writes_and_prints_the_gap_to_bon(tmp_path, capsys):
    runs = tmp_path / "sweep"
    for k, n in enumerate((1, 2, 4)):  # BoN from the pool: rewards 0, 1, 3 at N = 1, 2, 4, at its own KL
        write_results(runs / "bon" / "results.jsonl", point("bon", 1.0, 1.0, float(max(0, 2 ** k - 1)),
                                                            math.log(n) - (n - 1) / n, n=n, estimate="cache",
                                                            kl_analytic=0.0))
    write_results(runs / "vbon" / "results.jsonl", point("vbon", 1 / 3, 1.0, 1.5, 0.5))
    assert cli.main([str(runs), "--wandb-mode", "disabled"]) == 0
    printed = capsys.readouterr().out
    assert "the gap to BoN at matched KL" in printed
    assert (runs / "pareto" / "report.txt").read_text() in printed  # the printed report, kept beside the tables
    out = runs / "pareto"
    gap = pd.read_csv(out / "bon_gap.csv")
    assert gap["objective"].tolist() == ["vbon"] and len(pd.read_csv(out / "bon_gap_points.csv")) == 1
    assert_valid_png(out / "bon_gap_vs_kl.png")
    assert (out / "bon_gap_vs_kl.pdf").read_bytes()[:5] == b"%PDF-"


def test_no_temperature_plot_for_one_temperature(tmp_path):
    runs = tmp_path / "sweep"
    write_results(runs / "0" / "results.jsonl", point("vbon", 1 / 3, 1.0, 1.0, 0.5))
    write_results(runs / "1" / "results.jsonl", point("kl_rl", 1 / 3, 1.0, 1.2, 0.9))
    assert cli.main([str(runs), "--wandb-mode", "disabled"]) == 0
    assert_valid_png(runs / "pareto" / "reward_vs_kl.png")  # the default output dir: RUNS/pareto
    assert not (runs / "pareto" / "vs_temperature.png").exists()


def test_only_failed_members_is_an_error_after_writing_points(tmp_path, capsys):
    runs = tmp_path / "sweep"
    write_results(runs / "0" / "results.jsonl", {"objective": "bon", "status": "failed", "error": "boom"})
    assert cli.main([str(runs), "--wandb-mode", "disabled"]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    assert len(pd.read_csv(runs / "pareto" / "points.csv")) == 1


def test_cli_splits_mixed_sets_and_group_by_pools_them(temperature_sweep, tmp_path):
    out = tmp_path / "plots"
    assert cli.main([str(temperature_sweep), "--out", str(out), "--wandb-mode", "disabled"]) == 0
    written = pd.read_csv(out / "points.csv")
    assert written[written["status"] == "ok"]["set"].nunique() == 2  # one set per evaluation temperature
    assert cli.main([str(temperature_sweep), "--out", str(out), "--wandb-mode", "disabled",
                     "--group-by", "task"]) == 0
    assert pd.read_csv(out / "points.csv")["set"].dropna().unique().tolist() == ["synthetic"]


def run_script(*args, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_empty_runs_dir_is_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    (empty / "0").mkdir(parents=True)  # a member dir without results
    result = run_script(str(empty))
    assert result.returncode == 2
    assert str(empty) in result.stderr and "results.jsonl" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("\n") == 1  # one line

    missing = run_script(str(tmp_path / "missing"))
    assert missing.returncode == 2 and str(tmp_path / "missing") in missing.stderr
    assert "Traceback" not in missing.stderr

    no_sweep = run_script("--output-root", str(tmp_path))  # RUNS defaults to the newest multirun dir: none
    assert no_sweep.returncode == 2 and str(tmp_path / "multirun") in no_sweep.stderr
    assert "Traceback" not in no_sweep.stderr


def test_python_m_vbon_exp_analysis_is_the_same_command(tmp_path):
    runs = tmp_path / "sweep"
    write_results(runs / "0" / "results.jsonl", point("vbon", 1 / 3, 1.0, 1.0, 0.5))
    result = subprocess.run([sys.executable, "-m", "vbon_exp.analysis", str(runs), "--out", str(tmp_path / "out"),
                             "--wandb-mode", "disabled"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "frontier frequency" in result.stdout and (tmp_path / "out" / "points.csv").is_file()


# ------------------------------------------------------------------------------------------------ wandb


def install_fake_wandb(monkeypatch, runs=None, error=None):
    calls = []

    class Api:
        def __init__(self, **kwargs):
            pass

        def runs(self, path):
            calls.append(path)
            if error is not None:
                raise error
            return iter(runs)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Api))
    return calls


def test_wandb_project_points(monkeypatch, tmp_path):
    calls = install_fake_wandb(monkeypatch, runs=fake_runs())
    out = tmp_path / "out"
    assert cli.main(["--wandb-project", "me/proj", "--out", str(out), "--wandb-mode", "disabled"]) == 0
    assert calls == ["me/proj"]
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 4 and (points["status"] == "failed").sum() == 1
    assert_valid_png(out / "reward_vs_kl.png")


def test_wandb_project_unreachable_is_one_clear_error(monkeypatch, tmp_path, capsys):
    install_fake_wandb(monkeypatch, error=ConnectionError("no route to host"))
    code = cli.main(["--wandb-project", "proj", "--out", str(tmp_path), "--wandb-mode", "disabled"])
    err = capsys.readouterr().err
    assert code == 2 and "'proj'" in err and "no route to host" in err and "wandb login" in err


def test_wandb_missing_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb → ImportError
    code = cli.main(["--wandb-project", "proj", "--out", str(tmp_path), "--wandb-mode", "disabled"])
    assert code == 2 and "needs wandb" in capsys.readouterr().err
