"""vbon_exp/pareto.py: the Pareto frontier (against brute force, with ties and duplicates), the tables, the plots,
the wandb conversion (fake runs, no server) and the CLI's errors (exit 2, one message, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vbon_exp import pareto

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "pareto_plot.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def brute_force_frontier(reward, kl) -> np.ndarray:
    """O(n²): on the frontier iff finite and no finite point has reward ≥ and KL ≤ with one strict."""
    reward, kl = np.asarray(reward, float), np.asarray(kl, float)
    finite = np.isfinite(reward) & np.isfinite(kl)
    on = np.zeros(len(reward), bool)
    for i in np.flatnonzero(finite):
        on[i] = not any(
            finite[j] and reward[j] >= reward[i] and kl[j] <= kl[i] and (reward[j] > reward[i] or kl[j] < kl[i])
            for j in range(len(reward))
        )
    return on


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200


# ------------------------------------------------------------------------------------------------ the frontier


@pytest.mark.parametrize(
    "points, expected",
    [
        ([], []),
        ([(1.0, 1.0)], [True]),
        ([(1.0, 1.0), (1.0, 1.0)], [True, True]),  # duplicates: neither dominates the other
        ([(1.0, 1.0), (1.0, 2.0)], [True, False]),  # same reward, more KL: dominated
        ([(2.0, 1.0), (1.0, 1.0)], [True, False]),  # same KL, less reward: dominated
        ([(2.0, 1.0), (1.0, 1.0), (1.0, 1.0)], [True, False, False]),  # dominated duplicates
        ([(1.0, 0.5), (2.0, 1.0), (3.0, 2.0), (2.5, 2.0)], [True, True, True, False]),  # a staircase
        ([(3.0, 2.0), (3.0, 2.0), (2.0, 2.0), (1.0, 0.0)], [True, True, False, True]),
        ([(1.0, 1.0), (float("nan"), 0.0), (5.0, float("nan"))], [True, False, False]),  # NaNs: off, no effect
        ([(-1.0, 0.0), (-1.0, -0.0), (0.0, 3.0)], [True, True, True]),  # -0.0 == 0.0: duplicates
        ([(1.0, 1.0), (np.inf, 5.0)], [True, False]),  # infinite: off, dominates nothing
    ],
)
def test_pareto_mask_hand_made(points, expected):
    reward = [r for r, _ in points]
    kl = [k for _, k in points]
    mask = pareto.pareto_mask(reward, kl)
    assert mask.dtype == bool and mask.tolist() == expected
    assert mask.tolist() == brute_force_frontier(reward, kl).tolist()


@pytest.mark.parametrize("seed", range(20))
def test_pareto_mask_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # few distinct values: many ties in reward, in KL and in both (duplicates)
    reward = rng.integers(0, 6, n).astype(float)
    kl = rng.integers(0, 6, n).astype(float)
    if seed % 3 == 0:
        reward[rng.integers(0, n)] = np.nan
    if seed % 2:
        reward, kl = reward + rng.normal(0, 1e-3, n) * (rng.random(n) < 0.5), kl  # some distinct, some tied
    assert pareto.pareto_mask(reward, kl).tolist() == brute_force_frontier(reward, kl).tolist()


def test_pareto_mask_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        pareto.pareto_mask([1.0, 2.0], [1.0])


def test_frontier_is_per_task_and_skips_failed_points():
    points = pareto.normalise(pd.DataFrame([
        {"task": "a", "objective": "vbon", "reward": 2.0, "kl": 1.0, "status": "ok"},
        {"task": "a", "objective": "bon", "reward": 1.0, "kl": 1.0, "status": "ok"},
        {"task": "a", "objective": "kl_rl", "reward": 9.0, "kl": 0.1, "status": "failed"},  # not a point
        {"task": "b", "objective": "bon", "reward": 1.0, "kl": 5.0, "status": "ok"},  # alone on task b
        {"task": "a", "objective": "kl_rl", "reward": 3.0, "kl": 4.0, "status": "ok"},
    ]))
    marked = pareto.add_frontier(points)
    assert marked["on_frontier"].tolist() == [True, False, False, True, True]
    frequency = pareto.frontier_frequency(marked).set_index("objective")
    assert frequency.index.tolist() == ["bon", "kl_rl", "vbon"]  # by name: no list of objectives in pareto.py
    assert frequency.loc["bon", ["points", "on_frontier", "failed"]].tolist() == [2, 1, 0]
    assert frequency.loc["bon", "fraction"] == 0.5
    assert frequency.loc["kl_rl", ["points", "on_frontier", "failed"]].tolist() == [1, 1, 1]
    assert frequency.loc["vbon", "fraction"] == 1.0


# ------------------------------------------------------------------------------------------------ files and plots


def write_results(path: Path, *records: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def point(objective, beta, temperature, reward, kl, seed=0, **extra) -> dict:
    return {"task": "synthetic", "objective": objective, "beta": beta, "n": 1 / beta + 1, "temperature": temperature,
            "m": 512, "seed": seed, "status": "ok", "reward": reward, "reward_se": 0.01, "kl": kl, "kl_se": 0.02,
            "win_rate": min(0.99, 0.5 + reward / 10), "win_rate_se": 0.005, **extra}


@pytest.fixture
def temperature_sweep(tmp_path) -> Path:
    """A hand-made sweep over two temperatures and two β, with a failed member and one blank line."""
    runs = tmp_path / "sweep"
    k = 0
    for temperature in (0.7, 1.0):
        for beta in (1 / 3, 1 / 7):
            n = 1 / beta + 1
            kl_analytic = np.log(n) - (n - 1) / n
            for objective, reward, kl, extra in (
                ("bon", 1.0 + beta + temperature, kl_analytic + 0.05, {"kl_analytic": kl_analytic}),
                ("vbon", 1.1 + beta + temperature, kl_analytic + 0.1, {}),
                ("kl_rl", 1.2 + temperature, kl_analytic + 0.3, {}),
            ):
                write_results(runs / str(k) / "results.jsonl", point(objective, beta, temperature, reward, kl, **extra))
                k += 1
    write_results(runs / str(k) / "results.jsonl", {
        "task": "synthetic", "objective": "bon", "beta": 0.3, "n": 4.33, "seed": 0, "status": "failed",
        "error": "objective.n must be an integer", "error_type": "ConfigError"})
    (runs / "0" / "results.jsonl").open("a").write("\n")
    return runs


def test_load_points_reads_every_results_file(temperature_sweep):
    points = pareto.load_points(temperature_sweep)
    assert len(points) == 13
    assert (points["status"] == "failed").sum() == 1
    assert set(points["results_file"]) == {f"{k}/results.jsonl" for k in range(13)}
    assert points["reward"].dtype == float and points["kl_analytic"].notna().sum() == 4


def test_cli_writes_tables_and_plots(temperature_sweep, tmp_path, capsys):
    out = tmp_path / "plots"
    assert pareto.main([str(temperature_sweep), "--out", str(out), "--wandb-mode", "disabled"]) == 0
    printed = capsys.readouterr().out
    assert "frontier frequency" in printed and "ConfigError" in printed

    points = pd.read_csv(out / "points.csv")
    assert len(points) == 13
    failed = points[points["status"] == "failed"]
    assert len(failed) == 1 and failed["error_type"].item() == "ConfigError" and not failed["on_frontier"].item()
    ok = points[points["status"] == "ok"]
    expected = brute_force_frontier(ok["reward"], ok["kl"])
    assert ok["on_frontier"].tolist() == expected.tolist()
    frontier = pd.read_csv(out / "frontier.csv")
    assert sorted(frontier["results_file"]) == sorted(ok.loc[expected, "results_file"])
    assert frontier["kl"].is_monotonic_increasing

    frequency = pd.read_csv(out / "frontier_frequency.csv").set_index("objective")
    assert frequency["points"].to_dict() == {"bon": 4, "vbon": 4, "kl_rl": 4}
    assert frequency["on_frontier"].sum() == expected.sum()
    assert frequency.loc["bon", "failed"] == 1

    for stem in ("reward_vs_kl", "win_rate_vs_kl", "vs_temperature"):  # two temperatures: the temperature plot
        assert_valid_png(out / f"{stem}.png")
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


def test_no_temperature_plot_for_one_temperature(tmp_path):
    runs = tmp_path / "sweep"
    write_results(runs / "0" / "results.jsonl", point("vbon", 1 / 3, 1.0, 1.0, 0.5))
    write_results(runs / "1" / "results.jsonl", point("kl_rl", 1 / 3, 1.0, 1.2, 0.9))
    assert pareto.main([str(runs), "--wandb-mode", "disabled"]) == 0
    assert_valid_png(runs / "pareto" / "reward_vs_kl.png")  # the default output dir: RUNS/pareto
    assert not (runs / "pareto" / "vs_temperature.png").exists()


def test_only_failed_members_is_an_error_after_writing_points(tmp_path, capsys):
    runs = tmp_path / "sweep"
    write_results(runs / "0" / "results.jsonl", {"objective": "bon", "status": "failed", "error": "boom"})
    assert pareto.main([str(runs), "--wandb-mode", "disabled"]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    assert len(pd.read_csv(runs / "pareto" / "points.csv")) == 1


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


def test_default_runs_dir_is_the_newest_sweep(tmp_path):
    for name in ("2026-01-01/10-00-00", "2026-01-02/09-00-00", "2026-01-01/23-59-59"):
        (tmp_path / "multirun" / name).mkdir(parents=True)
    assert pareto.newest_sweep(tmp_path) == tmp_path / "multirun" / "2026-01-02" / "09-00-00"


# ------------------------------------------------------------------------------------------------ wandb


def fake_run(name, objective, beta, reward, kl, *, state="finished", job_type="train", flat=False, results_id=None,
             **summary):
    config = {"task": {"name": "synthetic"}, "objective": {"name": objective, "beta": beta, "n": 1 / beta + 1,
                                                           "bound": "l1" if objective == "vbon" else None},
              "algo": {"name": "ppo"}, "sampling": {"temperature": 1.0}, "reference": {"m": 512}, "seed": 0}
    if results_id is not None:  # what run.py adds beside the config: the results line's own identifying columns
        config["results_id"] = results_id
    if flat:  # some wandb versions hand back flattened keys, with {"value": ...} wrappers
        config = {"task.name": {"value": "synthetic"}, "objective.name": objective, "objective.beta": beta,
                  "objective.n": 1 / beta + 1, "algo.name": "ppo", "sampling.temperature": 1.0,
                  "reference.m": 512, "seed": 0}
    metrics = {"reward": reward, "kl": kl, "win_rate": 0.9, "_runtime": 3.0, "_step": 1, "final/reward": reward,
               "train/loss": 0.1, **summary}
    if reward is None:
        metrics = {"_runtime": 1.0}
    return types.SimpleNamespace(name=name, config=config, summary=metrics, state=state, job_type=job_type,
                                 path=["me", "proj", name])


def fake_runs():
    return [
        fake_run("a", "vbon", 1 / 3, 1.5, 0.7),
        fake_run("b", "bon", 1 / 3, 1.4, 0.6, kl_analytic=0.63,
                 results_id={"objective": "bon", "algo": None, "objective_label": "BoN (sampling)"}),
        fake_run("c", "kl_rl", 1 / 7, 2.0, 1.6, flat=True),
        fake_run("d", "vbon", 1 / 7, None, None, state="crashed"),
        fake_run("e", "vbon", 1 / 7, 1.0, 1.0, job_type="pareto"),  # a pareto run: not a point
    ]


def test_runs_to_frame_converts_wandb_runs():
    points = pareto.runs_to_frame(fake_runs()).set_index("wandb_name")
    assert points.index.tolist() == ["a", "b", "c", "d"]
    assert points.loc["a", ["task", "objective", "algo", "bound", "status"]].tolist() == [
        "synthetic", "vbon", "ppo", "l1", "ok"]
    assert pd.isna(points.loc["b", "algo"]) and points.loc["b", "kl_analytic"] == 0.63
    assert points.loc["c", ["task", "objective", "reward", "kl"]].tolist() == ["synthetic", "kl_rl", 2.0, 1.6]
    assert points.loc["c", "beta"] == pytest.approx(1 / 7) and points.loc["c", "m"] == 512
    assert points.loc["d", "status"] == "failed" and "crashed" in points.loc["d", "error"]
    assert points.loc["a", "wandb_run"] == "me/proj/a"
    assert not any(c.startswith("_") or "/" in c for c in points.columns)


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
    assert pareto.main(["--wandb-project", "me/proj", "--out", str(out), "--wandb-mode", "disabled"]) == 0
    assert calls == ["me/proj"]
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 4 and (points["status"] == "failed").sum() == 1
    assert_valid_png(out / "reward_vs_kl.png")


def test_wandb_project_unreachable_is_one_clear_error(monkeypatch, tmp_path, capsys):
    install_fake_wandb(monkeypatch, error=ConnectionError("no route to host"))
    code = pareto.main(["--wandb-project", "proj", "--out", str(tmp_path), "--wandb-mode", "disabled"])
    err = capsys.readouterr().err
    assert code == 2 and "'proj'" in err and "no route to host" in err and "wandb login" in err


def test_wandb_missing_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb → ImportError
    code = pareto.main(["--wandb-project", "proj", "--out", str(tmp_path), "--wandb-mode", "disabled"])
    assert code == 2 and "needs wandb" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ eval.temperatures


def _series(fig) -> dict:
    """Label -> (x, y) of each errorbar series in the first panel (the reward panel)."""
    ax = fig.axes[0]
    return {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers}


def test_vs_temperature_is_against_the_evaluation_temperature_per_trained_policy(tmp_path):
    """Policies trained at one sampling temperature (0.7) and evaluated at four (eval.temperatures): the figure is
    drawn (one sampling temperature, four evaluation temperatures), one series per trained policy, x the
    evaluation temperature."""
    runs = tmp_path / "sweep"
    evals = (0.25, 0.5, 0.75, 1.0)
    for k, objective in enumerate(("vbon", "kl_rl")):
        write_results(runs / str(k) / "results.jsonl", *(
            point(objective, 1 / 3, 0.7, reward=k + t, kl=0.5 + t, eval_temperature=t) for t in evals))
    assert pareto.main([str(runs), "--wandb-mode", "disabled"]) == 0
    assert_valid_png(runs / "pareto" / "vs_temperature.png")
    points = pareto.load_points(runs)
    fig = pareto.plot_vs_temperature(points)
    assert fig.axes[0].get_xlabel() == "evaluation temperature"
    assert _series(fig) == {"vbon, trained at T = 0.7": (list(evals), [0 + t for t in evals]),
                            "kl_rl, trained at T = 0.7": (list(evals), [1 + t for t in evals])}


def test_vs_temperature_separates_policies_trained_at_different_temperatures(tmp_path):
    runs = tmp_path / "sweep"
    for k, trained in enumerate((0.7, 1.0)):
        write_results(runs / str(k) / "results.jsonl", *(
            point("vbon", 1 / 3, trained, reward=trained * 10 + t, kl=0.5, eval_temperature=t) for t in (0.5, 1.0)))
    series = _series(pareto.plot_vs_temperature(pareto.load_points(runs)))
    assert series == {"vbon, trained at T = 0.7": ([0.5, 1.0], [7.5, 8.0]),
                      "vbon, trained at T = 1": ([0.5, 1.0], [10.5, 11.0])}


def test_lines_without_eval_temperature_were_evaluated_at_the_sampling_temperature(temperature_sweep):
    points = pareto.load_points(temperature_sweep)
    ok = points[points["status"] == "ok"]
    assert ok["eval_temperature"].tolist() == ok["temperature"].tolist()
    series = _series(pareto.plot_vs_temperature(points))  # a sampling-temperature sweep: one series per (objective, N)
    assert series["vbon, N = 4"][0] == [0.7, 1.0]


# ------------------------------------------------------------------------------------------------ eval.judges


def test_judge_columns_get_their_own_figures(tmp_path):
    runs = tmp_path / "sweep"
    judged = {"judge/vader/reward": 0.3, "judge/vader/reward_se": 0.01, "judge/vader/win_rate": 0.6,
              "judge/vader/win_rate_se": 0.02}
    write_results(runs / "0" / "results.jsonl", point("vbon", 1 / 3, 1.0, 1.0, 0.5, **judged))
    write_results(runs / "1" / "results.jsonl", point("kl_rl", 1 / 3, 1.0, 1.2, 0.9))  # an unjudged run
    points = pareto.load_points(runs)
    figures = pareto.judge_figures(points)
    assert sorted(figures) == ["judge_vader_reward_vs_kl", "judge_vader_win_rate_vs_kl"]
    ax = figures["judge_vader_win_rate_vs_kl"].axes[0]
    assert [(list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers] == [([0.5], [0.6])]
    assert pareto.main([str(runs), "--wandb-mode", "disabled"]) == 0
    for stem in figures:
        assert_valid_png(runs / "pareto" / f"{stem}.png")
    table = pd.read_csv(runs / "pareto" / "points.csv").set_index("objective")
    assert table.loc["vbon", "judge/vader/win_rate"] == 0.6 and np.isnan(table.loc["kl_rl", "judge/vader/win_rate"])


def test_runs_to_frame_keeps_the_judge_columns():
    run = fake_run("a", "vbon", 1 / 3, 1.5, 0.7, **{"judge/vader/reward": 0.2, "final/judge/vader/reward": 0.2})
    points = pareto.runs_to_frame([run])
    assert points["judge/vader/reward"].tolist() == [0.2] and "final/judge/vader/reward" not in points
