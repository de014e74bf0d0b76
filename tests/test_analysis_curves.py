"""vbon_exp/analysis/curves.py: training curves from train_log.jsonl and the flatness verdict."""

import json
import math
import subprocess
import sys

import pytest
from analysis_helpers import REPO_ROOT

from vbon_exp.analysis.curves import flatness, main, run_curve, sweep_curves
from vbon_exp.tracking import Tracker


def test_a_rising_curve_is_not_flat_and_a_noisy_plateau_is():
    rising = [0.1 * i for i in range(40)]
    assert flatness(rising)["flat"] is False
    assert flatness(rising)["delta"] == pytest.approx(1.0)  # quarters of 10 updates, 0.1 apart each
    plateau = [1.0 + (0.05 if i % 2 else -0.05) for i in range(40)]
    f = flatness(plateau)
    assert f["flat"] is True and f["final"] == pytest.approx(1.0) and abs(f["delta"]) < 1e-12


def test_too_short_a_curve_gets_no_verdict():
    assert flatness([1.0, 2.0, 3.0])["flat"] is None
    assert math.isnan(flatness([])["final"])


def test_tracker_writes_the_curve_and_the_reader_keeps_the_last_value_per_step(tmp_path):
    """A resumed run logs re-done updates again: the curve keeps the last value logged for each step."""
    tracker = Tracker(tmp_path, {}, mode="disabled", project="p")
    for step, reward in [(1, 0.1), (2, 0.2), (2, 0.25), (3, 0.3)]:
        tracker.log({"train/reward": reward, "train/note": "text is not logged"}, step=step)
    assert run_curve(tmp_path) == [(1, 0.1), (2, 0.25), (3, 0.3)]
    assert "note" not in (tmp_path / "train_log.jsonl").read_text()


def write_sweep(root) -> None:
    for member, (objective, slope) in enumerate([("vbon", 0.0), ("kl_rl", 0.05)]):
        run = root / str(member)
        run.mkdir()
        (run / "results.jsonl").write_text(json.dumps({"objective": objective, "beta": 0.25, "seed": 0}) + "\n")
        with open(run / "train_log.jsonl", "w") as f:
            for step in range(1, 41):
                f.write(json.dumps({"step": step, "train/reward": slope * step + 0.01 * (step % 3)}) + "\n")


def test_sweep_curves_table_and_figure(tmp_path):
    write_sweep(tmp_path)
    records = {r["objective"]: r for r in sweep_curves(tmp_path)}
    assert records["vbon"]["flat"] is True and records["kl_rl"]["flat"] is False
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "pareto" / "training_curves.png").stat().st_size > 0
    rows = (tmp_path / "pareto" / "training_curves.csv").read_text().splitlines()
    assert rows[0].startswith("objective,beta,seed") and len(rows) == 3


def test_runs_as_a_module(tmp_path):
    """What `make pareto-plot` runs: python -m vbon_exp.analysis.curves RUNS."""
    write_sweep(tmp_path)
    result = subprocess.run([sys.executable, "-m", "vbon_exp.analysis.curves", str(tmp_path)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "training curves of 2 runs: 1 flat" in result.stdout and "Warning" not in result.stderr
