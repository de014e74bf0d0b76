"""The reward–KL Pareto frontier: which points are on it (per seed, and of the seed means), how often each method
is on it, the exact regret below the exact frontier, and the exact curves drawn under the points.

The frontier: maximise reward, minimise KL; a point is on it iff no other point of its set has reward ≥ and KL ≤
with one of the two strict (equal points do not dominate each other). Failed members and points without a finite
reward and KL are listed but neither plotted nor on the frontier."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from vbon_exp.analysis.sets import SEED, is_bon_target, mean_interval, plottable, sets_of
from vbon_exp.results import EXACT_FRONTIER_FILE, read_exact_frontiers


def pareto_mask(reward, kl) -> np.ndarray:
    """Which points are on the Pareto frontier (maximise reward, minimise KL): no other point has reward ≥ and
    KL ≤ with one strict. Equal points are all on it or all off it. NaN or infinite points are never on it and
    dominate nothing. O(n log n): by KL ascending, a KL group's best points are on the frontier iff they beat the
    best reward of every smaller KL."""
    reward = np.asarray(reward, dtype=float)
    kl = np.asarray(kl, dtype=float)
    if reward.shape != kl.shape or reward.ndim != 1:
        raise ValueError(f"reward and kl must be 1-d of one length, got {reward.shape} and {kl.shape}")
    mask = np.zeros(len(reward), dtype=bool)
    valid = np.flatnonzero(np.isfinite(reward) & np.isfinite(kl))
    order = valid[np.lexsort((-reward[valid], kl[valid]))]
    best_before = -math.inf  # the highest reward among points with strictly smaller KL
    start = 0
    while start < len(order):
        stop = start
        while stop < len(order) and kl[order[stop]] == kl[order[start]]:
            stop += 1
        group = order[start:stop]
        top = reward[group[0]]  # sorted by reward, descending, within the group
        if top > best_before:
            mask[group[reward[group] == top]] = True
        best_before = max(best_before, top)
        start = stop
    return mask


def _frontier_within(frame: pd.DataFrame, by: list[str], include: pd.Series) -> pd.Series:
    """On the reward–KL frontier of its `by` group, among the rows where `include` holds (others: NaN)."""
    marked = pd.Series(np.nan, index=frame.index, dtype=float)
    for _, group in frame[include].groupby(by, dropna=False, sort=False):
        marked[group.index] = pareto_mask(group["reward"], group["kl"]).astype(float)
    return marked.map({1.0: True, 0.0: False})


def add_seed_frontiers(points: pd.DataFrame) -> pd.DataFrame:
    """`on_frontier`: the point is on the frontier of its seed's points of its set (what frontier frequency counts);
    `on_frontier_without_bon`: the same with BoN's points left out of the frontier (NaN for BoN's own)."""
    points = points.copy()
    ok = plottable(points)
    points["on_frontier"] = _frontier_within(points, ["set", SEED], ok).eq(True)
    points["on_frontier_without_bon"] = _frontier_within(points, ["set", SEED], ok & ~is_bon_target(points))
    return points


def add_frontier(configs: pd.DataFrame) -> pd.DataFrame:
    """`on_frontier` of the seed means: the frontier drawn, one per set."""
    configs = configs.copy()
    configs["on_frontier"] = _frontier_within(configs, ["set"], configs["reward"].notna()).eq(True)
    return configs


FREQUENCY_COLUMNS = ("set", "objective", "seeds", "points", "on_frontier_mean", "ci_low", "ci_high",
                     "on_frontier_mean_without_bon", "ci_low_without_bon", "ci_high_without_bon", "failed")


def frontier_frequency(points: pd.DataFrame) -> pd.DataFrame:
    """Per set and objective: the fraction of its points on the frontier, counted within each seed's points of the
    set (`add_seed_frontiers`), then its mean over seeds with the 95% t-interval (NaN bounds with one seed); the
    same with BoN's points out of the frontier (`_without_bon`; NaN for BoN); successful points and failed members.
    The paper's claim is that vBoN's points are on the frontier more often than the other objectives'."""
    ok = points[plottable(points)]
    rows = []
    for set_label in sets_of(points):
        in_set = points["set"] == set_label
        for objective in sorted(points.loc[in_set, "objective"].unique(), key=str):
            mine = ok[(ok["set"] == set_label) & (ok["objective"] == objective)]
            row = {"set": set_label, "objective": objective, "seeds": mine[SEED].nunique(dropna=False),
                   "points": len(mine),
                   "failed": int((in_set & (points["objective"] == objective) & (points["status"] != "ok")).sum())}
            for column, suffix in (("on_frontier", ""), ("on_frontier_without_bon", "_without_bon")):
                per_seed = mine[column].astype(float).groupby(mine[SEED], dropna=False).mean().dropna()
                mean, low, high = mean_interval(per_seed)
                # a fraction: the t-interval clipped to [0, 1] (with 3 seeds it is wide, and would leave the range)
                row[f"on_frontier_mean{suffix}"] = mean
                row[f"ci_low{suffix}"], row[f"ci_high{suffix}"] = float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))
            rows.append(row)
    return pd.DataFrame(rows, columns=list(FREQUENCY_COLUMNS))


def regret_table(configs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration of an exact task: its exact regrets below the exact reward and win-rate frontiers (the
    `exact_regret` / `exact_win_rate_regret` its results lines carry), mean over seeds with the 95% interval."""
    if "exact_regret" not in configs:
        return pd.DataFrame()
    keys = [c for c in ("set", "objective", "algo", "bound", "transform", "beta", "n", "seeds") if c in configs]
    values = [f"{metric}{suffix}" for metric in ("exact_regret", "exact_win_rate_regret")
              for suffix in ("", "_ci_low", "_ci_high") if f"{metric}{suffix}" in configs]
    exact = configs[configs["exact_regret"].notna()]
    order = exact.assign(_o=exact["objective"].astype(str)).sort_values(["set", "_o", "beta"]).index
    return exact.loc[order, keys + values].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- exact frontier
#
# On a task with an exact oracle (the synthetic task) the frontier over all policies is known: every run writes its
# task's exact curves beside its results (`<run_dir>/exact_frontier.json`, one entry per evaluation temperature,
# with the spec that determines them), and the analysis draws them under the exact points.


def exact_frontier_dir(row: pd.Series, runs_dir: Path | None) -> Path | None:
    """The run dir of a results line that holds its exact_frontier.json: the results file's dir under `runs_dir`
    (the sweep may have moved since), else the line's own `run_dir`."""
    candidates = []
    if runs_dir is not None and isinstance(row.get("results_file"), str):
        candidates.append(Path(runs_dir) / Path(row["results_file"]).parent)
    if isinstance(row.get("run_dir"), str):
        candidates.append(Path(row["run_dir"]))
    return next((path for path in candidates if (path / EXACT_FRONTIER_FILE).is_file()), None)


def _entry_at(entries: list[dict], temperature: float) -> dict | None:
    """The entry of a run's exact_frontier.json at the line's evaluation temperature."""
    if not math.isfinite(temperature):
        return entries[0] if len(entries) == 1 else None
    return next((e for e in entries if math.isclose(float(e["eval_temperature"]), temperature, rel_tol=1e-9)), None)


def exact_curves(points: pd.DataFrame, runs_dir: Path | None) -> tuple[dict, list[str]]:
    """({set: the exact curves}, notes on what could not be drawn). Each exact point's curves are its run's
    exact_frontier.json entry at its evaluation temperature; a set's curves are drawn when every entry found agrees
    on its spec (a set whose runs were made with different task configs has no one exact frontier). Points without
    the file (runs written before it, wandb sources) get none."""
    curves, notes, read = {}, [], {}
    if "exact_kl" not in points:
        return curves, notes
    exact = plottable(points) & points["exact_kl"].notna()
    for set_label in sets_of(points[exact]):
        rows = points[exact & (points["set"] == set_label)]
        specs, missing = {}, 0
        for _, row in rows.iterrows():
            run_dir = exact_frontier_dir(row, runs_dir)
            if run_dir is not None and run_dir not in read:
                read[run_dir] = read_exact_frontiers(run_dir)
            entry = _entry_at(read[run_dir], float(row["eval_temperature"])) if run_dir is not None else None
            if entry is None:
                missing += 1
                continue
            specs.setdefault(json.dumps(entry["spec"], sort_keys=True), entry["curves"])
        if len(specs) != 1:
            notes.append(f"{set_label}: exact frontier not drawn: " + (
                f"no {EXACT_FRONTIER_FILE} beside its results (runs written before it, or points read from wandb)"
                if not specs else
                f"its runs were made with {len(specs)} different task configs, so there is no one exact frontier"))
            continue
        if missing:
            notes.append(f"{set_label}: {missing} of its {len(rows)} exact points have no {EXACT_FRONTIER_FILE} "
                         "entry at their evaluation temperature: the curves drawn are the other runs'")
        (curves[set_label],) = specs.values()
    return curves, notes


CURVES = ("optimum_reward", "optimum_win_rate", "bon")  # exact_frontier.csv's order (the file's keys are sorted)


def curves_frame(curves: dict) -> pd.DataFrame:
    """exact_frontier.csv: one row per curve point: set, curve (optimum_reward, optimum_win_rate: the frontiers;
    bon: π_BoN over N), kl, reward and/or win_rate."""
    def order(name: str) -> tuple:
        return (CURVES.index(name) if name in CURVES else len(CURVES), name)

    frames = [pd.DataFrame({"set": set_label, "curve": name, **by_name[name]})
              for set_label, by_name in curves.items() for name in sorted(by_name, key=order)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
