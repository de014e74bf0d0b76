"""vbon_exp/analysis/load.py: results files (through vbon_exp.results) and wandb runs (fake runs, no server) into
one normalised table; the newest sweep; the samples of runs with their identifying columns."""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import fake_run, fake_runs, frame, make_temperature_sweep, point, write_results, write_samples

from vbon_exp.analysis import load
from vbon_exp.analysis.sets import COMPARABLE, set_columns


@pytest.fixture
def temperature_sweep(tmp_path):
    return make_temperature_sweep(tmp_path)


def test_load_points_reads_every_results_file(temperature_sweep):
    points = load.load_points(temperature_sweep)
    assert len(points) == 13
    assert (points["status"] == "failed").sum() == 1
    assert set(points["results_file"]) == {f"{k}/results.jsonl" for k in range(13)}
    assert points["reward"].dtype == float and points["kl_analytic"].notna().sum() == 4


def test_load_results_is_the_api_of_the_same_reader(temperature_sweep):
    from vbon_exp import analysis

    assert analysis.load_results(temperature_sweep).equals(load.load_points(temperature_sweep))


def test_missing_or_empty_runs_dirs_are_analysis_errors(tmp_path):
    with pytest.raises(load.AnalysisError, match="does not exist"):
        load.load_points(tmp_path / "missing")
    (tmp_path / "0").mkdir()
    with pytest.raises(load.AnalysisError, match="no results.jsonl files"):
        load.load_points(tmp_path)
    (tmp_path / "0" / "results.jsonl").write_text("\n")
    with pytest.raises(load.AnalysisError, match="hold no results lines"):
        load.load_points(tmp_path)


def test_eval_temperature_falls_back_to_the_sampling_temperature_per_line():
    points = frame({"objective": "vbon", "reward": 1.0, "kl": 1.0, "temperature": 0.7},
                   {"objective": "vbon", "reward": 2.0, "kl": 2.0, "temperature": 1.0, "eval_temperature": 0.7})
    assert points["eval_temperature"].tolist() == [0.7, 0.7]
    assert set_columns(points, None) == list(COMPARABLE)  # one set


def test_default_runs_dir_is_the_newest_sweep(tmp_path):
    for name in ("2026-01-01/10-00-00", "2026-01-02/09-00-00", "2026-01-01/23-59-59"):
        (tmp_path / "multirun" / name).mkdir(parents=True)
    assert load.newest_sweep(tmp_path) == tmp_path / "multirun" / "2026-01-02" / "09-00-00"


# ------------------------------------------------------------------------------------------------ wandb


def test_runs_to_frame_converts_wandb_runs():
    points = load.runs_to_frame(fake_runs()).set_index("wandb_name")
    assert points.index.tolist() == ["a", "b", "c", "d"]
    assert points.loc["a", ["task", "objective", "algo", "bound", "status"]].tolist() == [
        "synthetic", "vbon", "ppo", "l1", "ok"]
    assert pd.isna(points.loc["b", "algo"]) and points.loc["b", "kl_analytic"] == 0.63
    assert points.loc["c", ["task", "objective", "reward", "kl"]].tolist() == ["synthetic", "kl_rl", 2.0, 1.6]
    assert points.loc["c", "beta"] == pytest.approx(1 / 7) and points.loc["c", "m"] == 512
    assert points.loc["d", "status"] == "failed" and "crashed" in points.loc["d", "error"]
    assert points.loc["a", "wandb_run"] == "me/proj/a"
    assert not any(c.startswith("_") or "/" in c for c in points.columns)


def test_runs_to_frame_keeps_the_judge_columns():
    run = fake_run("a", "vbon", 1 / 3, 1.5, 0.7, **{"judge/vader/reward": 0.2, "final/judge/vader/reward": 0.2})
    points = load.runs_to_frame([run])
    assert points["judge/vader/reward"].tolist() == [0.2] and "final/judge/vader/reward" not in points


# ------------------------------------------------------------------------------------------------ samples


def test_load_samples_adds_each_runs_identity(tmp_path):
    """The samples of two runs, each with the identifying columns its results lines agree on (a run at two
    evaluation temperatures: not `eval_temperature`, which the samples carry) and its run dir; a dir without
    samples is skipped."""
    a, b = tmp_path / "0", tmp_path / "1"
    write_samples(a, "vbon", temperatures=(0.5, 1.0))  # 2 prompts × 2 samples per temperature
    write_results(a / "results.jsonl", *(point("vbon", 1 / 3, 1.0, 1.0, 0.5, eval_temperature=t, algo="ppo",
                                               objective_label="vBoN") for t in (0.5, 1.0)))
    write_samples(b, "kl_rl")  # no results.jsonl: the samples' own columns only
    (tmp_path / "2").mkdir()
    samples = load.load_samples([a, b, tmp_path / "2"])
    assert len(samples) == 8 + 4 and samples["run_dir"].unique().tolist() == [str(a), str(b)]
    mine = samples[samples["run_dir"] == str(a)]
    assert mine["beta"].unique().tolist() == [pytest.approx(1 / 3)] and (mine["objective_label"] == "vBoN").all()
    assert sorted(mine["eval_temperature"].unique()) == [0.5, 1.0]  # the samples' own, per row
    assert samples.loc[samples["run_dir"] == str(b), "beta"].isna().all()
    with pytest.raises(load.AnalysisError, match="none of the 1 run dir"):
        load.load_samples([tmp_path / "2"])
