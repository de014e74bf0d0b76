"""vbon_exp/analysis/frontier.py: the Pareto frontier (against brute force, with ties and duplicates), per set and
seed, its frequency per seed with an interval, and the exact frontier of a real synthetic sweep (exact regret from
the results lines, exact curves from the runs' exact_frontier.json)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import assert_valid_png, brute_force_frontier, frame
from conftest import run_app

from vbon_exp.analysis import cli, frontier
from vbon_exp.analysis.load import load_points
from vbon_exp.analysis.tables import frontier_tables, portable_run_dirs
from vbon_exp.results import EXACT_FRONTIER_FILE

T2 = math.sqrt(2) * 0.95 / math.sqrt(1 - 0.95**2)  # t_{0.975, 2}: with 2 df, P(|T| ≤ t) = t/√(t² + 2)


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
    mask = frontier.pareto_mask(reward, kl)
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
    assert frontier.pareto_mask(reward, kl).tolist() == brute_force_frontier(reward, kl).tolist()


def test_pareto_mask_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        frontier.pareto_mask([1.0, 2.0], [1.0])


def test_frontier_is_per_set_and_seed_and_skips_failed_points():
    points = frame(
        {"task": "a", "objective": "vbon", "reward": 2.0, "kl": 1.0},
        {"task": "a", "objective": "bon", "reward": 1.0, "kl": 1.0},
        {"task": "a", "objective": "kl_rl", "reward": 9.0, "kl": 0.1, "status": "failed"},  # not a point
        {"task": "b", "objective": "bon", "reward": 1.0, "kl": 5.0},  # alone on task b
        {"task": "a", "objective": "kl_rl", "reward": 3.0, "kl": 4.0},
        {"task": "a", "objective": "bon", "reward": 0.5, "kl": 0.5, "seed": 1},  # alone in seed 1
    )
    marked = frontier_tables(points, None, None)["points"].set_index(["task", "objective", "seed", "kl"])
    assert marked["on_frontier"].to_dict() == {
        ("a", "bon", 0, 1.0): False, ("a", "bon", 1, 0.5): True, ("a", "kl_rl", 0, 0.1): False,
        ("a", "kl_rl", 0, 4.0): True, ("a", "vbon", 0, 1.0): True, ("b", "bon", 0, 5.0): True}


# ------------------------------------------------------------------------------------------------ frequency


def seeded_sweep() -> pd.DataFrame:
    """Three seeds of objectives a, b and BoN in one set, points as (reward, KL); the frontiers, worked out by hand
    below as (KL, reward), give the per-seed fractions of the test."""
    rows = []
    for seed, bon, a, b in (
        # seed 0 frontier, by KL: bon (0.5, 1.0), a (1.0, 2.0), b (3.0, 3.0); without BoN b's (0.6, 0.9) too
        (0, (1.0, 0.5), [(2.0, 1.0), (1.5, 2.0)], [(3.0, 3.0), (0.9, 0.6)]),
        # seed 1: bon, a (1.5, 2.5), b (2.5, 2.6); without BoN a's (0.7, 0.8) too
        (1, (1.0, 0.5), [(0.8, 0.7), (2.5, 1.5)], [(2.0, 2.0), (2.6, 2.5)]),
        # seed 2: bon, b (0.8, 1.2); without BoN b (0.8, 1.2) alone
        (2, (1.0, 0.5), [(0.5, 1.0), (0.7, 3.0)], [(1.2, 0.8), (1.1, 2.0)]),
    ):
        rows.append({"objective": "bon", "seed": seed, "reward": bon[0], "kl": bon[1], "kl_analytic": bon[1]})
        rows += [{"objective": "a", "seed": seed, "reward": r, "kl": k} for r, k in a]
        rows += [{"objective": "b", "seed": seed, "reward": r, "kl": k} for r, k in b]
    rows.append({"objective": "b", "seed": 3, "status": "failed", "error": "boom"})
    return frame(*rows)


def test_frontier_frequency_is_counted_per_seed_with_an_interval():
    frequency = frontier_tables(seeded_sweep(), None, None)["frontier_frequency"].set_index("objective")
    assert frequency.loc["a", ["seeds", "points", "failed"]].tolist() == [3, 6, 0]
    assert frequency.loc["b", ["seeds", "points", "failed"]].tolist() == [3, 6, 1]

    def expect(objective, suffix, fractions):
        mean, s = np.mean(fractions), np.std(fractions, ddof=1)
        row = frequency.loc[objective]
        low, high = max(0.0, mean - T2 * s / math.sqrt(3)), min(1.0, mean + T2 * s / math.sqrt(3))  # a fraction
        assert (row[f"on_frontier_mean{suffix}"], row[f"ci_low{suffix}"], row[f"ci_high{suffix}"]) == pytest.approx(
            (mean, low, high))

    expect("a", "", [0.5, 0.5, 0.0])  # mean 1/3, s = √(1/12): t-interval (−0.38, 1.05), clipped to [0, 1]
    expect("b", "", [0.5, 0.5, 0.5])  # no spread: the interval is the point
    expect("bon", "", [1.0, 1.0, 1.0])
    expect("a", "_without_bon", [0.5, 1.0, 0.0])  # mean 1/2, s = 1/2
    expect("b", "_without_bon", [1.0, 0.5, 0.5])  # mean 2/3, s = √(1/12)
    assert frequency.loc["bon", ["on_frontier_mean_without_bon", "ci_low_without_bon"]].isna().all()


def test_one_seed_frequency_has_no_interval():
    frequency = frontier_tables(seeded_sweep().query("seed == 0"), None, None)["frontier_frequency"]
    a = frequency.set_index("objective").loc["a"]
    assert a["on_frontier_mean"] == 0.5 and np.isnan(a["ci_low"]) and np.isnan(a["ci_high"])


def test_kl_rl_transforms_are_methods_of_their_own():
    """objective=kl_rl objective.transform=cdf is counted, styled and labelled apart from plain KL-RL."""
    points = frame({"objective": "kl_rl", "transform": "identity", "reward": 1.0, "kl": 1.0,
                    "objective_label": "KL-regularised RL"},
                   {"objective": "kl_rl", "transform": "cdf", "reward": 2.0, "kl": 2.0,
                    "objective_label": "KL-regularised RL"},
                   {"objective": "vbon", "reward": 0.5, "kl": 1.5, "objective_label": "vBoN"})
    assert points["objective"].tolist() == ["kl_rl", "kl_rl[cdf]", "vbon"]
    assert points["objective_label"].tolist()[1] == "KL-regularised RL (cdf)"
    frequency = frontier_tables(points, None, None)["frontier_frequency"].set_index("objective")
    assert frequency.loc["kl_rl[cdf]", "points"] == 1 and frequency.loc["kl_rl", "points"] == 1


# ------------------------------------------------------------------------------------------------ the exact frontier
# Regret tolerance 1e-9: frontier and policy values are float64 sums over the enumerated responses (round-off ~1e-13)
# and the frontier's bisection ends at float64 resolution; a policy above the frontier would be off by far more.
REGRET_TOL = 1e-9
BETAS = (1 / 3, 1 / 7)


@pytest.fixture(scope="module")
def exact_sweep(tmp_path_factory) -> Path:
    """A real small synthetic sweep: bon, vbon, kl_rl × β = 1/3, 1/7 × seeds 0, 1 (3-token responses, 5 updates:
    what is tested holds for whatever the trainers reach), through the app in this process (conftest.run_app)."""
    root = tmp_path_factory.mktemp("exact-sweep")
    result = run_app("-m", "objective=bon,vbon,kl_rl", "objective.beta=" + ",".join(repr(b) for b in BETAS),
                     "seed=0,1", f"paths.output_root={root}", "task.response_length=3", "train.max_updates=5",
                     "eval.samples_per_prompt=32", "wandb.mode=disabled")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sorted((root / "multirun").glob("*/*"))
    return sweep


def sweep_lines(sweep: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(sweep.glob("*/results.jsonl"))
            for line in path.read_text().splitlines()]


def oracle_of(run_dir: Path, tmp_path: Path):
    """The exact oracle of a run's task, rebuilt on the CPU from the spec its exact_frontier.json records (the
    synthetic task's artifacts rebuilt from the task config's seeds in `tmp_path`): what the test checks the runs
    against; the analysis itself never builds a task."""
    import torch
    from omegaconf import OmegaConf

    from vbon_exp.tasks import TASKS

    (entry,) = json.loads((run_dir / EXACT_FRONTIER_FILE).read_text())
    spec = entry["spec"]
    kind = TASKS[spec["task"]["name"]]
    task_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(kind.config), spec["task"]))
    task = kind.build(task_cfg, device=torch.device("cpu"), cache_dir=str(tmp_path), temperature=spec["temperature"],
                      max_new_tokens=spec["max_new_tokens"], model=None, reward=None)
    return entry, task.oracle


def test_synthetic_results_lines_carry_the_exact_regret(exact_sweep):
    lines = sweep_lines(exact_sweep)
    assert len(lines) == 12 and all(line["status"] == "ok" for line in lines)
    for line in lines:
        assert isinstance(line["exact_regret"], float) and isinstance(line["exact_win_rate_regret"], float)
    # what the plot links: BoN's points (analytic KL) are the targets of the points that aim at π_BoN (target_n)
    assert {line["objective"]: ("kl_analytic" in line, "target_n" in line) for line in lines} == {
        "bon": (True, True), "vbon": (False, True), "kl_rl": (False, False)}


def test_exact_frontier_dominates_every_point_of_a_real_sweep(exact_sweep, tmp_path):
    lines = sweep_lines(exact_sweep)
    for line in lines:
        assert line["exact_regret"] >= -REGRET_TOL and line["exact_win_rate_regret"] >= -REGRET_TOL, line
    # the oracle rebuilt from the spec a run wrote beside its results is the runs' own: it gives back the recorded
    # regrets and the curves the run wrote ...
    entry, oracle = oracle_of(Path(lines[0]["run_dir"]), tmp_path)
    for line in lines:
        assert oracle.frontier_regret(line) == pytest.approx(
            {k: line[k] for k in ("exact_regret", "exact_win_rate_regret")}, abs=1e-12)
    for name, curve in oracle.frontier_curves().items():
        for column, values in curve.items():
            assert entry["curves"][name][column] == pytest.approx(values, abs=1e-12)
    # ... and the KL-regularised optima π* of the sweep's β are on its reward frontier
    for beta in BETAS:
        assert abs(oracle.frontier_regret(oracle.metrics(oracle.optimum_log_probs(beta)))["exact_regret"]) <= REGRET_TOL


def test_pareto_plot_draws_the_exact_frontier_of_a_real_sweep(exact_sweep, capsys):
    assert cli.main([str(exact_sweep), "--wandb-mode", "disabled"]) == 0
    printed = capsys.readouterr().out
    assert "exact regret" in printed and "exact frontier not drawn" not in printed  # every run wrote its curves
    out = exact_sweep / "pareto"
    assert_valid_png(out / "exact_vs_kl.png")
    by_config = {}
    for line in sweep_lines(exact_sweep):
        by_config.setdefault((line["objective"], round(line["beta"], 9)), []).append(line["exact_regret"])
    regret = pd.read_csv(out / "regret.csv")
    assert len(regret) == 6 and (regret["seeds"] == 2).all()
    for row in regret.itertuples():  # the mean over the two seeds, its t-interval (1 df: t = tan(0.475π))
        values = by_config[(row.objective, round(row.beta, 9))]
        half = math.tan(0.475 * math.pi) * abs(values[0] - values[1]) / 2
        assert (row.exact_regret, row.exact_regret_ci_low, row.exact_regret_ci_high) == pytest.approx(
            (np.mean(values), np.mean(values) - half, np.mean(values) + half), abs=1e-12)
    bon = regret[regret["objective"] == "bon"]  # exact π_BoN does not depend on the seed: no interval to speak of
    assert (bon["exact_regret_ci_high"] - bon["exact_regret_ci_low"]).abs().max() <= 1e-12
    curves = pd.read_csv(out / "exact_frontier.csv")
    names = set(curves["curve"].unique())  # the frontiers, π_BoN, and the gold curves (vbon_exp/tasks/synthetic_gold.py)
    assert {"bon", "optimum_reward", "optimum_win_rate"} <= names and all(
        name.startswith("gold_") for name in names - {"bon", "optimum_reward", "optimum_win_rate"})
    for _, curve in curves.groupby("curve"):
        assert curve["kl"].is_monotonic_increasing
    (entry,) = json.loads((Path(sweep_lines(exact_sweep)[0]["run_dir"]) / EXACT_FRONTIER_FILE).read_text())
    drawn = curves[curves["curve"] == "optimum_reward"]  # the CSV holds the curves the runs wrote
    assert drawn["reward"].tolist() == pytest.approx(entry["curves"]["optimum_reward"]["reward"])
    gap = pd.read_csv(out / "bon_gap_points.csv")  # BoN from the pool (N = 4, 8) in the set: the gap to BoN
    assert len(gap) == 8 and set(gap["objective"]) == {"vbon", "kl_rl"} and (gap["bon_curve"] == "same seed").all()


def test_exact_curves_come_from_the_runs_files_and_need_one_spec(exact_sweep, tmp_path):
    """A run dir is found from its results file under RUNS when the lines lack `run_dir` (a moved sweep); a set
    whose runs wrote different specs gets no curves, and a set without any exact_frontier.json neither: a note
    says why."""
    copy = tmp_path / "sweep"
    shutil.copytree(exact_sweep, copy, ignore=shutil.ignore_patterns("pareto"))
    for path in copy.glob("*/results.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in line.items() if k != "run_dir"}) + "\n"
                                for line in lines))
    out = frontier_tables(load_points(copy), None, copy)
    assert len(out["curves"]) == 1 and not [note for note in out["notes"] if "exact" in note]

    files = sorted(copy.glob(f"*/{EXACT_FRONTIER_FILE}"))
    entries = json.loads(files[0].read_text())
    entries[0]["spec"]["task"]["reward_seed"] = 12345  # another task: no one exact frontier
    files[0].write_text(json.dumps(entries))
    out = frontier_tables(load_points(copy), None, copy)
    (note,) = [n for n in out["notes"] if "exact frontier" in n]
    assert out["curves"] == {} and "2 different task configs" in note

    for path in files:
        path.unlink()
    out = frontier_tables(load_points(copy), None, copy)
    (note,) = [n for n in out["notes"] if "exact frontier" in n]
    assert out["curves"] == {} and f"no {EXACT_FRONTIER_FILE}" in note
    assert len(out["regret"]) == 6  # the regrets are the results lines' own: there with or without the curves


def test_run_dirs_under_the_current_directory_are_written_relative_to_it(tmp_path, monkeypatch):
    """Tables committed to docs/results/ carry `outputs/...`, not one machine's absolute path; a run dir elsewhere
    (or missing, or already relative) is kept as it is."""
    monkeypatch.chdir(tmp_path)
    table = pd.DataFrame({"run_dir": [str(tmp_path / "outputs" / "sweep" / "0"), "/elsewhere/run", None,
                                      "outputs/x"], "reward": [1.0, 2.0, 3.0, 4.0]})
    out = portable_run_dirs(table)
    kept = out["run_dir"].tolist()
    assert kept[:2] + kept[3:] == ["outputs/sweep/0", "/elsewhere/run", "outputs/x"] and pd.isna(kept[2])
    assert out["reward"].tolist() == table["reward"].tolist() and table["run_dir"][0].startswith(str(tmp_path))
    assert portable_run_dirs(table.drop(columns="run_dir")).equals(table.drop(columns="run_dir"))
