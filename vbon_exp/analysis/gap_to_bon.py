"""The gap to BoN at matched KL: how much reward (and win rate) a method leaves to best-of-N sampling at the KL
it spent.

BoN from the pool (`objective=bon objective.estimate=cache`) gives, per comparable set, BoN's reward and win rate
at N = 1, 2, 4, …; BoN's KL at N is the analytic log N − (N − 1)/N (`kl_analytic`; it increases with N, from 0 at
N = 1, π_ref). For a trained point with KL k, N* solves log N* − (N* − 1)/N* = k (bisection; k ≤ 0 is N* = 1), and
BoN's values at k are interpolated linearly in N between the pool's two neighbouring N. A point whose KL is beyond
the analytic KL of the pool's largest N gets no BoN value (`beyond_pool`): BoN is never extrapolated.

Each point is paired with the BoN curve of its own seed where that seed has BoN lines in the set, else with the
curve of BoN's seed means (`bon_curve`). The gap is BoN's value minus the point's: positive where BoN is ahead.
SEs: the interpolated BoN SE is the same linear interpolation of the neighbours' SEs (an upper bound on the SE of
the interpolated value whatever their correlation), and a gap's SE adds the two variances (the policy's samples and
BoN's pool are independent draws; the win rates share the test cache, which only makes the sum conservative)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vbon_exp.analysis.sets import (
    SEED,
    config_columns,
    is_bon_target,
    plottable,
    seed_mean_row,
    sets_of,
)
from vbon_exp.results import natural_key

BON, POOL_ESTIMATE = "bon", "cache"  # BoN from the pool: objective=bon objective.estimate=cache
CURVE_COLUMNS = ("reward", "win_rate", "reward_se", "win_rate_se")
SAME_SEED, SEED_MEAN = "same seed", "seed mean"  # `bon_curve`: which BoN curve a point is compared with
# the seed means of bon_gap.csv, each with `_ci_low` / `_ci_high`
GAP_METRICS = ("kl", "reward", "win_rate", "bon_n_at_kl", "bon_reward_at_kl", "bon_win_rate_at_kl", "reward_gap",
               "win_rate_gap")


def bon_analytic_kl(n):
    """KL(π_BoN ‖ π_ref) = log N − (N − 1)/N for continuous rewards (real N ≥ 1 too)."""
    n = np.asarray(n, dtype=float)
    return np.log(n) - (n - 1) / n


def n_at_kl(kl: float, n_max: float) -> float:
    """The real N* ∈ [1, n_max] whose analytic KL is `kl`, by bisection on log N (the analytic KL increases with
    N): 1 for kl ≤ 0 (π_ref), inf beyond n_max's analytic KL, NaN for a NaN kl."""
    if not math.isfinite(kl):
        return math.nan if math.isnan(kl) else math.inf
    if kl <= 0:
        return 1.0
    if kl > float(bon_analytic_kl(n_max)):
        return math.inf
    lo, hi = 0.0, math.log(n_max)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if bon_analytic_kl(math.exp(mid)) < kl else (lo, mid)
        if hi - lo <= 1e-15:
            break
    return math.exp(0.5 * (lo + hi))


# ---------------------------------------------------------------------------------------------------- BoN's curves


def pool_lines(points: pd.DataFrame) -> pd.DataFrame:
    """The successful BoN-from-the-pool lines: one per N (and evaluation temperature) per run."""
    if "estimate" not in points:
        return points[:0]
    return points[plottable(points) & (points["objective"] == BON) & (points["estimate"] == POOL_ESTIMATE)]


def compared_points(points: pd.DataFrame) -> pd.DataFrame:
    """The points compared with BoN: every successful line but BoN's own (objective `bon`, which has an analytic
    KL); inference-time relatives of BoN under other objectives are points too."""
    bon_itself = is_bon_target(points) & (points["objective"] == BON)
    return points[plottable(points) & ~bon_itself]


def _seed(value):
    return None if pd.isna(value) else float(value)


def with_reference_point(bon: pd.DataFrame) -> pd.DataFrame:
    """BoN's lines with, for each seed that has no N = 1 line (a sweep over N = 4, 8, …), π_ref's point N = 1 from the
    lines' `ref_reward` (the test cache's mean reward at their evaluation temperature) and win rate ½ (π_ref
    against π_ref, ties ½): the curve then starts at KL 0, as BoN's does."""
    if "ref_reward" not in bon:
        return bon
    extra = []
    for seed, mine in bon.groupby(bon[SEED].map(_seed), dropna=False):
        if (mine["n"] == 1).any() or not mine["ref_reward"].notna().any():
            continue
        extra.append({**mine.iloc[0].to_dict(), "n": 1.0, "reward": float(mine["ref_reward"].mean()),
                      "win_rate": 0.5, "reward_se": np.nan, "win_rate_se": np.nan})
    return pd.concat([bon, pd.DataFrame(extra)], ignore_index=True) if extra else bon


def seed_curves(bon: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """({seed: its BoN curve}, the curve of BoN's seed means): frames indexed by N (sorted) with CURVE_COLUMNS.
    Lines of one seed at one N (sets pooled on purpose) are averaged. The seed-mean curve keeps an SE only where
    one seed makes it (that seed's own, as `mean_interval` does with one seed)."""
    bon = with_reference_point(bon)
    bon = bon.assign(_seed=bon[SEED].map(_seed), **{c: bon[c] if c in bon else np.nan for c in CURVE_COLUMNS})
    per_seed = bon.groupby(["_seed", "n"], dropna=False)[list(CURVE_COLUMNS)].mean().reset_index()
    curves = {seed: mine.set_index("n")[list(CURVE_COLUMNS)].sort_index()
              for seed, mine in per_seed.groupby("_seed", dropna=False)}
    by_n = per_seed.groupby("n")
    means = by_n[["reward", "win_rate"]].mean()
    for column in ("reward_se", "win_rate_se"):
        means[column] = by_n[column].first().where(by_n.size() == 1)
    return {_seed(seed): curve for seed, curve in curves.items()}, means.sort_index()


def at_kl(curve: pd.DataFrame, kl: float) -> dict:
    """BoN's values at analytic KL `kl` on `curve` (indexed by N): N*, and each column interpolated linearly in N
    between the neighbouring N of the curve; NaN beyond its largest N (`beyond_pool`) or below its smallest (a
    curve without N = 1)."""
    ns = curve.index.to_numpy(dtype=float)
    n_star = n_at_kl(kl, float(ns.max()))
    out = {"bon_n_at_kl": n_star, "beyond_pool": n_star == math.inf}
    inside = math.isfinite(n_star) and n_star >= ns.min() * (1 - 1e-12)
    for column in CURVE_COLUMNS:
        name = f"bon_{column.removesuffix('_se')}_at_kl" + ("_se" if column.endswith("_se") else "")
        out[name] = float(np.interp(n_star, ns, curve[column].to_numpy(dtype=float))) if inside else math.nan
    return out


# ---------------------------------------------------------------------------------------------------- the tables


def _gap_row(row: pd.Series, curve: pd.DataFrame, which: str, keys: list[str]) -> dict:
    bon = at_kl(curve, float(row["kl"]))
    out = {**{k: row.get(k) for k in keys}, SEED: row.get(SEED), "objective_label": row.get("objective_label"),
           "kl": row["kl"], "kl_se": row.get("kl_se"), "reward": row["reward"], "reward_se": row.get("reward_se"),
           "win_rate": row.get("win_rate"), "win_rate_se": row.get("win_rate_se"), **bon, "bon_curve": which}
    for metric in ("reward", "win_rate"):
        out[f"{metric}_gap"] = bon[f"bon_{metric}_at_kl"] - _float(out[metric])
        out[f"{metric}_gap_se"] = math.hypot(_float(out[f"{metric}_se"]), bon[f"bon_{metric}_at_kl_se"])
    out["results_file"] = row.get("results_file")
    return out


def _float(value) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)


def gap_points(points: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(bon_gap_points.csv: one row per compared point with BoN's values at its KL and the gaps, notes). Needs the
    `set` column (label_sets). A set without BoN-from-the-pool lines gets no rows and a note."""
    pool, compared = pool_lines(points), compared_points(points)
    keys = config_columns(compared)
    rows, notes = [], []
    for set_label in sets_of(compared):
        bon = pool[pool["set"] == set_label]
        if bon.empty:
            notes.append(f"{set_label}: no gap to BoN: no BoN-from-the-pool lines in the set "
                         "(objective=bon objective.estimate=cache, e.g. objective.n=all)")
            continue
        curves, mean_curve = seed_curves(bon)
        mine = []
        for _, row in compared[compared["set"] == set_label].iterrows():
            seed = _seed(row.get(SEED))
            curve, which = (curves[seed], SAME_SEED) if seed in curves else (mean_curve, SEED_MEAN)
            mine.append(_gap_row(row, curve, which, keys))
        rows += mine
        below = [r for r in mine if not r["beyond_pool"] and math.isnan(r["bon_reward_at_kl"])]
        if below:
            notes.append(f"{set_label}: {len(below)} point(s) below the analytic KL of the pool's smallest N (no "
                         "N = 1 line): no BoN value")
    gaps = pd.DataFrame(rows)
    return (_sorted(gaps) if len(gaps) else gaps), notes


def gap_seed_means(gaps: pd.DataFrame) -> pd.DataFrame:
    """bon_gap.csv: one row per configuration, its seeds averaged (`seed_mean_row`: 95% t-interval, the run's own
    SE with one seed): GAP_METRICS with `_ci_low` / `_ci_high`, `seeds`, `seeds_in_pool` (seeds with a BoN
    value), `beyond_pool` (any seed's point beyond the pool) and `bon_curve`."""
    if gaps.empty:
        return gaps
    keys = config_columns(gaps)
    rows = []
    for key, group in gaps.groupby(keys, dropna=False, sort=False):
        row = {**dict(zip(keys, key)), "objective_label": group["objective_label"].dropna().iloc[0]
               if group["objective_label"].notna().any() else None,
               "seeds": group[SEED].nunique(dropna=False), "seeds_in_pool": int(group["reward_gap"].notna().sum()),
               "beyond_pool": bool(group["beyond_pool"].any()),
               "bon_curve": ", ".join(sorted(group["bon_curve"].unique()))}
        rows.append({**row, **seed_mean_row(group, GAP_METRICS)})
    return _sorted(pd.DataFrame(rows))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by set, objective, N, β, seed; the identifying columns first."""
    order = frame.assign(_set=frame["set"].map(natural_key), _o=frame["objective"].astype(str))
    by = ["_set", "_o", *(c for c in ("n", "beta", SEED) if c in frame)]
    frame = frame.loc[order.sort_values(by, kind="stable", na_position="last").index].reset_index(drop=True)
    lead = [c for c in ("set", "objective", "objective_label") if c in frame]
    return frame[lead + [c for c in frame if c not in lead]]
