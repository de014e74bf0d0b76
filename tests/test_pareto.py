"""vbon_exp/pareto.py: the Pareto frontier (against brute force, with ties and duplicates), the tables, the plots,
the wandb conversion (fake runs, no server) and the CLI's errors (exit 2, one message, no traceback)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

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
    assert pareto.main([str(temperature_sweep), "--out", str(out), "--wandb-mode", "disabled",
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


def frame(*rows: dict) -> pd.DataFrame:
    """Hand-made results lines: synthetic task, M = 512, temperature 1, seed 0, status ok unless given."""
    return pareto.normalise(pd.DataFrame([
        {"task": "synthetic", "m": 512, "temperature": 1.0, "seed": 0, "status": "ok", **row} for row in rows]))


def test_frontier_is_per_set_and_seed_and_skips_failed_points():
    points = frame(
        {"task": "a", "objective": "vbon", "reward": 2.0, "kl": 1.0},
        {"task": "a", "objective": "bon", "reward": 1.0, "kl": 1.0},
        {"task": "a", "objective": "kl_rl", "reward": 9.0, "kl": 0.1, "status": "failed"},  # not a point
        {"task": "b", "objective": "bon", "reward": 1.0, "kl": 5.0},  # alone on task b
        {"task": "a", "objective": "kl_rl", "reward": 3.0, "kl": 4.0},
        {"task": "a", "objective": "bon", "reward": 0.5, "kl": 0.5, "seed": 1},  # alone in seed 1
    )
    marked = pareto.tables(points, None, None)["points"].set_index(["task", "objective", "seed", "kl"])
    assert marked["on_frontier"].to_dict() == {
        ("a", "bon", 0, 1.0): False, ("a", "bon", 1, 0.5): True, ("a", "kl_rl", 0, 0.1): False,
        ("a", "kl_rl", 0, 4.0): True, ("a", "vbon", 0, 1.0): True, ("b", "bon", 0, 5.0): True}


# ------------------------------------------------------------------------------------------------ comparable sets


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
    split = pareto.label_sets(points, pareto.set_columns(points, None))
    assert split["set"].nunique() == 2
    assert pareto.tables(points, None, None)["points"]["on_frontier"].tolist() == [True, True]  # each alone
    assert pareto.set_columns(points, None) == pareto.set_columns(points, list(pareto.COMPARABLE))
    pooled = pareto.label_sets(points, pareto.set_columns(points, ["task"]))
    assert pooled["set"].tolist() == ["synthetic"] * 2
    assert pareto.tables(points, ["task"], None)["points"]["on_frontier"].tolist() == [True, True]


def test_eval_temperature_falls_back_to_the_sampling_temperature_per_line():
    points = frame({"objective": "vbon", "reward": 1.0, "kl": 1.0, "temperature": 0.7},
                   {"objective": "vbon", "reward": 2.0, "kl": 2.0, "temperature": 1.0, "eval_temperature": 0.7})
    assert points["eval_temperature"].tolist() == [0.7, 0.7]
    assert pareto.set_columns(points, None) == list(pareto.COMPARABLE)  # one set


def test_several_tasks_are_separate_sets_by_default():
    points = frame({"task": "a", "objective": "vbon", "reward": 1.0, "kl": 1.0},
                   {"task": "b", "objective": "vbon", "reward": 2.0, "kl": 2.0, "m": 64})
    labelled = pareto.label_sets(points, pareto.set_columns(points, None))
    assert labelled["set"].tolist() == ["a · T_eval=1 · M=512", "b · T_eval=1 · M=64"]


def test_group_by_rejects_unknown_columns():
    with pytest.raises(pareto.ParetoError, match="objective is not one of"):
        pareto.set_columns(frame({"objective": "vbon", "reward": 1.0, "kl": 1.0}), ["task", "objective"])


def test_cli_splits_mixed_sets_and_group_by_pools_them(temperature_sweep, tmp_path):
    out = tmp_path / "plots"
    assert pareto.main([str(temperature_sweep), "--out", str(out), "--wandb-mode", "disabled"]) == 0
    written = pd.read_csv(out / "points.csv")
    assert written[written["status"] == "ok"]["set"].nunique() == 2  # one set per evaluation temperature
    assert pareto.main([str(temperature_sweep), "--out", str(out), "--wandb-mode", "disabled",
                        "--group-by", "task"]) == 0
    assert pd.read_csv(out / "points.csv")["set"].dropna().unique().tolist() == ["synthetic"]


# ------------------------------------------------------------------------------------------------ seeds


def test_student_t_quantile_matches_scipy():
    from scipy import stats

    for df in range(1, 31):
        assert pareto.student_t_quantile(0.95, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10)
    assert pareto.student_t_quantile(0.9, 4) == pytest.approx(stats.t.ppf(0.95, 4), rel=1e-10)


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
    configs = pareto.tables(points, None, None)["seed_means"].set_index(["objective", "beta"])
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
    frequency = pareto.tables(seeded_sweep(), None, None)["frontier_frequency"].set_index("objective")
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
    frequency = pareto.tables(seeded_sweep().query("seed == 0"), None, None)["frontier_frequency"]
    a = frequency.set_index("objective").loc["a"]
    assert a["on_frontier_mean"] == 0.5 and np.isnan(a["ci_low"]) and np.isnan(a["ci_high"])


def test_plot_links_each_distilling_point_to_its_bon_target():
    points = frame(
        {"objective": "bon", "n": 4, "target_n": 4, "reward": 1.0, "kl": 0.6, "kl_analytic": 0.64},
        {"objective": "bon", "n": 16, "target_n": 16, "reward": 2.0, "kl": 1.8, "kl_analytic": 1.83},
        {"objective": "vbon", "n": 4, "target_n": 4, "reward": 1.1, "kl": 0.7},
        {"objective": "vbon", "n": 8, "target_n": 8, "reward": 1.5, "kl": 1.2},  # no BoN at N = 8
        {"objective": "kl_rl", "n": 4, "reward": 2.5, "kl": 3.0},  # aims at π*, not π_BoN
    )
    out = pareto.tables(points, None, None)
    fig = pareto.plot_vs_kl(out["seed_means"], out["points"], "reward", "reward", title="t", frontier=True)
    arrows = [text for text in fig.axes[0].texts if getattr(text, "arrow_patch", None) is not None]
    assert [(arrow.xyann, arrow.xy) for arrow in arrows] == [((0.7, 1.1), (0.6, 1.0))]


def test_the_whole_family_gets_distinct_colours_and_a_legend_beside_the_points():
    """Eleven methods (the paper's six and the BOND family): tab10 alone would give two of them one colour, and
    their legend (13 entries) inside the panel would cover the points, so it goes beside it in a wider figure."""
    names = [f"method{i:02d}" for i in range(11)]
    points = frame(*({"objective": name, "n": 4, "reward": 1.0 + i, "kl": 0.5 + i} for i, name in enumerate(names)))
    styles = pareto.objective_styles(points)
    assert len({colour for colour, _, _ in styles.values()}) == 11
    out = pareto.tables(points, None, None)
    fig = pareto.plot_vs_kl(out["seed_means"], out["points"], "reward", "reward", title="t", frontier=True)
    ax = fig.axes[0]
    fig.canvas.draw()
    legend, panel = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= panel.x1  # beside, not over, the points
    assert fig.get_size_inches()[0] == pytest.approx(7.2 + pareto.LEGEND_WIDTH_IN)
    few = frame({"objective": "a", "n": 4, "reward": 1.0, "kl": 0.5}, {"objective": "b", "n": 4, "reward": 2.0, "kl": 1.0})
    out = pareto.tables(few, None, None)
    fig = pareto.plot_vs_kl(out["seed_means"], out["points"], "reward", "reward", title="t", frontier=True)
    fig.canvas.draw()
    assert fig.axes[0].get_legend().get_window_extent().x1 <= fig.axes[0].get_window_extent().x1  # short: inside


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


def vs_temperature(points: pd.DataFrame):
    """The temperature figure of `points`, one set per evaluation temperature."""
    out = pareto.tables(points, list(pareto.COMPARABLE), None)
    return pareto.plot_vs_temperature(out["seed_means"], out["points"])


def test_vs_temperature_is_against_the_evaluation_temperature_per_trained_policy(tmp_path):
    """Policies trained at one sampling temperature (0.7) and evaluated at four (eval.temperatures): the figure is
    drawn (one sampling temperature, four evaluation temperatures), one series per trained policy, x the
    evaluation temperature."""
    runs = tmp_path / "sweep"
    evals = (0.25, 0.5, 0.75, 1.0)
    for k, objective in enumerate(("vbon", "kl_rl")):
        write_results(runs / str(k) / "results.jsonl", *(
            point(objective, 1 / 3, 0.7, reward=k + t, kl=0.5 + t, eval_temperature=t) for t in evals))
    assert pareto.main([str(runs), "--wandb-mode", "disabled"]) == 0  # four evaluation temperatures: four sets
    assert_valid_png(runs / "pareto" / "vs_temperature.png")
    fig = vs_temperature(pareto.load_points(runs))
    assert fig.axes[0].get_xlabel() == "evaluation temperature"
    assert _series(fig) == {"vbon, trained at T = 0.7": (list(evals), [0 + t for t in evals]),
                            "kl_rl, trained at T = 0.7": (list(evals), [1 + t for t in evals])}


def test_vs_temperature_separates_policies_trained_at_different_temperatures(tmp_path):
    runs = tmp_path / "sweep"
    for k, trained in enumerate((0.7, 1.0)):
        write_results(runs / str(k) / "results.jsonl", *(
            point("vbon", 1 / 3, trained, reward=trained * 10 + t, kl=0.5, eval_temperature=t) for t in (0.5, 1.0)))
    series = _series(vs_temperature(pareto.load_points(runs)))
    assert series == {"vbon, trained at T = 0.7": ([0.5, 1.0], [7.5, 8.0]),
                      "vbon, trained at T = 1": ([0.5, 1.0], [10.5, 11.0])}


def test_lines_without_eval_temperature_were_evaluated_at_the_sampling_temperature(temperature_sweep):
    points = pareto.load_points(temperature_sweep)
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
    out = pareto.tables(pareto.load_points(runs), None, None)
    figures = pareto.judge_figures(out["seed_means"], out["points"])
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


# ------------------------------------------------------------------------------------------------ the exact frontier
# Regret tolerance 1e-9: frontier and policy values are float64 sums over the enumerated responses (round-off ~1e-13)
# and the frontier's bisection ends at float64 resolution; a policy above the frontier would be off by far more.
REGRET_TOL = 1e-9
BETAS = (1 / 3, 1 / 7)


@pytest.fixture(scope="module")
def exact_sweep(tmp_path_factory) -> Path:
    """A real small synthetic sweep: bon, vbon, kl_rl × β = 1/3, 1/7 × seeds 0, 1 (3-token responses, 5 updates:
    what is tested holds for whatever the trainers reach; ~15 s)."""
    root = tmp_path_factory.mktemp("exact-sweep")
    result = run_cli("-m", "objective=bon,vbon,kl_rl", "objective.beta=" + ",".join(repr(b) for b in BETAS),
                     "seed=0,1", f"paths.output_root={root}", "task.response_length=3", "train.max_updates=5",
                     "eval.samples_per_prompt=32", "wandb.mode=disabled", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sorted((root / "multirun").glob("*/*"))
    return sweep


def sweep_lines(sweep: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(sweep.glob("*/results.jsonl")) for line in path.read_text().splitlines()]


def test_synthetic_results_lines_carry_the_exact_regret(exact_sweep):
    lines = sweep_lines(exact_sweep)
    assert len(lines) == 12 and all(line["status"] == "ok" for line in lines)
    for line in lines:
        assert isinstance(line["exact_regret"], float) and isinstance(line["exact_win_rate_regret"], float)
    # what the plot links: BoN's points (analytic KL) are the targets of the points that aim at π_BoN (target_n)
    assert {line["objective"]: ("kl_analytic" in line, "target_n" in line) for line in lines} == {
        "bon": (True, True), "vbon": (False, True), "kl_rl": (False, False)}


def test_exact_frontier_dominates_every_point_of_a_real_sweep(exact_sweep):
    lines = sweep_lines(exact_sweep)
    for line in lines:
        assert line["exact_regret"] >= -REGRET_TOL and line["exact_win_rate_regret"] >= -REGRET_TOL, line
    # the oracle rebuilt from a run's saved config is the runs' own: it gives back the recorded regrets ...
    _, spec = pareto.oracle_spec(Path(lines[0]["run_dir"]) / ".hydra" / "config.yaml")
    oracle = pareto.build_oracle(spec)
    for line in lines:
        assert oracle.frontier_regret(line) == pytest.approx(
            {k: line[k] for k in ("exact_regret", "exact_win_rate_regret")}, abs=1e-12)
    # ... and the KL-regularised optima π* of the sweep's β are on its reward frontier
    for beta in BETAS:
        assert abs(oracle.frontier_regret(oracle.metrics(oracle.optimum_log_probs(beta)))["exact_regret"]) <= REGRET_TOL


def test_pareto_plot_draws_the_exact_frontier_of_a_real_sweep(exact_sweep, capsys):
    assert pareto.main([str(exact_sweep), "--wandb-mode", "disabled"]) == 0
    printed = capsys.readouterr().out
    assert "exact regret" in printed and "note:" not in printed  # the rebuilt oracle matched the recorded regrets
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
    assert sorted(curves["curve"].unique()) == ["bon", "optimum_reward", "optimum_win_rate"]
    for _, curve in curves.groupby("curve"):
        assert curve["kl"].is_monotonic_increasing


def test_regret_of_older_results_lines_is_filled_from_the_rebuilt_oracle(exact_sweep, tmp_path):
    """Lines written before `exact_regret` get it from the oracle rebuilt from their run's saved config; a recorded
    regret the rebuilt oracle does not reproduce is reported (the curves may not be the runs' frontier)."""
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(exact_sweep, copy, ignore=shutil.ignore_patterns("pareto"))
    original = {}
    for k, path in enumerate(sorted(copy.glob("*/results.jsonl"))):
        line = json.loads(path.read_text())
        original[path.parent.name] = line["exact_regret"]
        if k == 0:
            line["exact_regret"] += 0.1  # a regret this oracle does not give
        else:
            del line["exact_regret"], line["exact_win_rate_regret"]
        line.pop("run_dir")  # found from the results file under RUNS
        path.write_text(json.dumps(line) + "\n")
    out = pareto.tables(pareto.load_points(copy), None, copy)
    filled = out["points"].set_index(out["points"]["results_file"].str.split("/").str[0])["exact_regret"]
    first = min(original)
    assert filled.drop(first).to_dict() == pytest.approx({k: v for k, v in original.items() if k != first},
                                                          abs=1e-12)
    (note,) = out["notes"]
    assert "gives regret" in note and f"{original[first] + 0.1:.6g}" in note


def test_kl_rl_transforms_are_methods_of_their_own():
    """objective=kl_rl objective.transform=cdf is counted, styled and labelled apart from plain KL-RL."""
    points = frame({"objective": "kl_rl", "transform": "identity", "reward": 1.0, "kl": 1.0,
                    "objective_label": "KL-regularised RL"},
                   {"objective": "kl_rl", "transform": "cdf", "reward": 2.0, "kl": 2.0,
                    "objective_label": "KL-regularised RL"},
                   {"objective": "vbon", "reward": 0.5, "kl": 1.5, "objective_label": "vBoN"})
    assert points["objective"].tolist() == ["kl_rl", "kl_rl[cdf]", "vbon"]
    assert points["objective_label"].tolist()[1] == "KL-regularised RL (cdf)"
    frequency = pareto.tables(points, None, None)["frontier_frequency"].set_index("objective")
    assert frequency.loc["kl_rl[cdf]", "points"] == 1 and frequency.loc["kl_rl", "points"] == 1
