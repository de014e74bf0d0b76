"""The tables of a sweep, composed in data-flow order (sets → per-seed frontiers → seed means → their frontier →
frequency, regret, the gap to BoN, the exact curves), ordered for reading, written as CSVs and formatted for the
terminal.

  points.csv               one row per results line (failed members too, with their error); its comparable `set`,
                           `on_frontier` (on its seed's frontier within its set), `on_frontier_without_bon`
  seed_means.csv           one row per configuration (its seeds averaged): mean and 95% interval of each metric
  frontier.csv             the seed-mean points on their set's frontier, by set and KL
  frontier_frequency.csv   per set and objective: the fraction of its points on the frontier, counted per seed,
                           mean and 95% interval over seeds, with and without BoN's points (also printed)
  regret.csv               exact tasks: per configuration, the exact regret below the exact frontier (seed mean and
                           95% interval); exact_frontier.csv: the exact frontier and π_BoN curves drawn
  bon_gap.csv              per configuration: BoN's reward and win rate at its KL minus its own (seed mean and 95%
                           interval; analysis/gap_to_bon.py); bon_gap_points.csv: the same per seed (also printed)
  gold_vs_proxy.csv        with eval.judges: per configuration, each judge's win rate and the share of the proxy's
                           gain it sees, and whether the method over-optimises (analysis/gold_vs_proxy.py; printed)"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vbon_exp.analysis.frontier import (
    add_frontier,
    add_seed_frontiers,
    curves_frame,
    exact_curves,
    frontier_frequency,
    regret_table,
)
from vbon_exp.analysis.gap_to_bon import gap_points, gap_seed_means
from vbon_exp.analysis.gold_vs_proxy import gold_vs_proxy
from vbon_exp.analysis.sets import SEED, aggregate_seeds, label_sets, set_columns
from vbon_exp.results import natural_key

# Leading columns of points.csv / frontier.csv; the rest follow alphabetically.
LEAD_COLUMNS = (
    "set", "task", "objective", "algo", "bound", "beta", "n", "temperature", "eval_temperature", "reward_output", "m",
    "seed", "seeds", "runs", "status", "on_frontier", "on_frontier_without_bon", "reward", "reward_ci_low",
    "reward_ci_high", "reward_se", "kl", "kl_ci_low", "kl_ci_high", "kl_se", "kl_estimator", "kl_analytic",
    "win_rate", "win_rate_ci_low", "win_rate_ci_high", "win_rate_se", "exact_regret", "error_type", "error",
)
# The CSV files, in the order written; points.csv and frontier_frequency.csv are written even when empty.
CSV_TABLES = ("points", "seed_means", "frontier", "frontier_frequency", "regret", "bon_gap", "bon_gap_points",
              "gold_vs_proxy")
ALWAYS_WRITTEN = ("points", "frontier_frequency")


def ordered(points: pd.DataFrame) -> pd.DataFrame:
    """Leading columns first; rows by set, objective (by name), N, temperature, seed, then source."""
    keys = pd.DataFrame({
        "set": points["set"].map(natural_key) if "set" in points else 0,
        "objective": points["objective"].astype(str),
        "n": points["n"].fillna(np.inf),
        "temperature": points["temperature"].fillna(np.inf) if "temperature" in points else 0,
        "seed": points[SEED].fillna(np.inf) if SEED in points else 0,
        "source": points["results_file"].map(natural_key) if "results_file" in points else 0,
        "line": points["line"] if "line" in points else 0,
    }, index=points.index)
    points = points.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)
    lead = [c for c in LEAD_COLUMNS if c in points]
    tail = sorted((c for c in points if c not in lead and c not in ("run_dir", "results_file", "line")),
                  key=lambda c: (c.removesuffix("_ci_low").removesuffix("_ci_high"), c.endswith("_ci_high")))
    last = [c for c in ("run_dir", "results_file", "line") if c in points]
    return points[lead + tail + last]


def frontier_tables(points: pd.DataFrame, group_by: Sequence[str] | None = None,
                    runs_dir: Path | None = None) -> dict:
    """Every table and the exact curves, in data-flow order: sets → per-seed frontiers → seed means → their
    frontier → frequency, regret and the gap to BoN; the exact curves from the runs' exact_frontier.json (looked
    for beside each results file under `runs_dir`, or in the line's `run_dir`). Keys: points, seed_means,
    frontier, frontier_frequency, regret, bon_gap, bon_gap_points, curves ({set: curves}), notes (what could not
    be drawn or compared), gold_vs_proxy."""
    points = label_sets(points, set_columns(points, group_by))
    curves, notes = exact_curves(points, runs_dir)
    points = ordered(add_seed_frontiers(points))
    configs = add_frontier(aggregate_seeds(points))
    configs = ordered(configs) if len(configs) else configs
    gaps, gap_notes = gap_points(points)
    return {"points": points, "seed_means": configs, "curves": curves, "notes": notes + gap_notes,
            "frontier": configs[configs["on_frontier"]].sort_values(["set", "kl", "reward"]) if len(configs)
            else configs, "frontier_frequency": frontier_frequency(points), "regret": regret_table(configs),
            "bon_gap": gap_seed_means(gaps), "bon_gap_points": gaps, "gold_vs_proxy": gold_vs_proxy(points, configs)}


def portable_run_dirs(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with each `run_dir` under the current directory written relative to it (tables committed to
    docs/results/ should not carry one machine's absolute paths); others are kept as they are."""
    if "run_dir" not in table:
        return table
    here = Path.cwd()

    def relative(value):
        if not isinstance(value, str) or not Path(value).is_absolute():
            return value
        path = Path(value)
        return str(path.relative_to(here)) if path.is_relative_to(here) else value

    return table.assign(run_dir=table["run_dir"].map(relative))


def write_tables(out: dict, out_dir: Path) -> list[str]:
    """The CSVs of `frontier_tables` into `out_dir` (empty tables are not written, but for ALWAYS_WRITTEN);
    returns the file names written."""
    written = []
    for name in CSV_TABLES:
        if name in ALWAYS_WRITTEN or len(out[name]):
            portable_run_dirs(out[name]).to_csv(out_dir / f"{name}.csv", index=False)
            written.append(f"{name}.csv")
    if out["curves"]:
        curves_frame(out["curves"]).to_csv(out_dir / "exact_frontier.csv", index=False)
        written.append("exact_frontier.csv")
    return written


# ---------------------------------------------------------------------------------------------------- the terminal


def mean_and_interval(mean: float, low: float, high: float, form: str = ".2f") -> str:
    """`mean [low, high]`, `mean` without an interval, `-` without a mean."""
    if not np.isfinite(mean):
        return "-"
    return f"{mean:{form}}" + (f" [{low:{form}}, {high:{form}}]" if np.isfinite(low) else "")


def _intervals(frame: pd.DataFrame, metric: str, suffix: str = "", form: str = ".2f") -> list[str]:
    columns = [f"{metric}{suffix}", f"ci_low{suffix}", f"ci_high{suffix}"] if metric == "on_frontier_mean" else [
        metric, f"{metric}_ci_low", f"{metric}_ci_high"]
    return [mean_and_interval(*values, form=form) for values in frame.reindex(columns=columns).values]


def format_frequency(frequency: pd.DataFrame) -> str:
    """The frontier frequency of each set as a table: mean over seeds [95% interval]."""
    blocks = []
    for set_label, mine in frequency.groupby("set", sort=False):
        shown = pd.DataFrame({
            "objective": mine["objective"], "seeds": mine["seeds"], "points": mine["points"],
            "on frontier": _intervals(mine, "on_frontier_mean"),
            "without BoN": _intervals(mine, "on_frontier_mean", "_without_bon"), "failed": mine["failed"]})
        blocks.append(f"[{set_label}]\n" + shown.to_string(index=False))
    return "\n".join(blocks)


def format_regret(regret: pd.DataFrame) -> str:
    shown = regret[[c for c in ("set", "objective", "beta", "n", "seeds") if c in regret]].copy()
    shown["exact regret"] = _intervals(regret, "exact_regret", form=".3g")
    return shown.to_string(index=False)


def format_bon_gap(gap: pd.DataFrame) -> str:
    """The gap to BoN of each set as a table: KL, reward gap and win-rate gap, mean over seeds [95% interval];
    `beyond pool` where BoN's pool does not reach the point's KL."""
    blocks = []
    for set_label, mine in gap.groupby("set", sort=False):
        shown = pd.DataFrame({
            "objective": mine["objective"], "beta": mine["beta"].map(lambda b: f"{b:.3g}"),
            "n": mine["n"].map(lambda n: f"{n:.3g}"), "seeds": mine["seeds"], "KL": _intervals(mine, "kl"),
            "BoN's N": mine["bon_n_at_kl"].map(lambda n: f"{n:.3g}" if np.isfinite(n) else "-"),
            "reward gap": _intervals(mine, "reward_gap", form=".3g"),
            "win-rate gap": _intervals(mine, "win_rate_gap", form=".3g"),
            "beyond pool": np.where(mine["beyond_pool"], "yes", "")})
        blocks.append(f"[{set_label}]\n" + shown.to_string(index=False))
    return "\n".join(blocks)
