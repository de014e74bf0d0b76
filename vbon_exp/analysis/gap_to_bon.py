"""The gap to BoN at matched KL: how much reward (and win rate) a method leaves to best-of-N sampling at the KL
it spent.

BoN from the pool (`objective=bon objective.estimate=cache`) gives, per comparable set, BoN's reward, win rate and
KL at N = 1, 2, 4, …: its own KL (`kl`, the pool's tie-aware estimate by default), not the continuous log N −
(N − 1)/N, which overstates BoN's KL wherever rewards tie (a point that *is* π_BoN(N) then meets BoN at a smaller N:
a spurious gap below 0). A point with KL k meets BoN's curve at the N* where the curve's KL is k: between two pool
sizes whose KLs bracket k, BoN's KL runs in N with the shape of log N − (N − 1)/N (exact for continuous rewards),
scaled to the two KLs; BoN's values at N* are interpolated linearly in log N* (BoN's reward grows about linearly in
log N; linearly in N it bows below BoN between pool sizes, by up to 0.07 on the synthetic task). A point whose KL is
beyond the KL of the pool's largest N gets no BoN value (`beyond_pool`): BoN is never extrapolated; nor does a point
below the KL of the curve's smallest N when the curve has no N = 1.

Each point is paired with the BoN curve of its own seed where that seed has BoN lines in the set, else with the
curve of BoN's seed means (`bon_curve`). The gap is BoN's value minus the point's: positive where BoN is ahead.
SEs: the interpolated BoN SE is the same interpolation of the neighbours' SEs (an upper bound on the SE of the
interpolated value whatever their correlation; the SE of BoN's KL, which moves N*, is left out), and a gap's SE
adds the two variances (the policy's samples and BoN's pool are independent draws; the win rates share the test
cache, which only makes the sum conservative)."""

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
CURVE_COLUMNS = ("kl", "reward", "win_rate", "reward_se", "win_rate_se")  # BoN's curve, indexed by N
INTERPOLATED = CURVE_COLUMNS[1:]  # its values at a point's KL
SAME_SEED, SEED_MEAN = "same seed", "seed mean"  # `bon_curve`: which BoN curve a point is compared with
# the seed means of bon_gap.csv, each with `_ci_low` / `_ci_high`
GAP_METRICS = ("kl", "reward", "win_rate", "bon_n_at_kl", "bon_reward_at_kl", "bon_win_rate_at_kl", "reward_gap",
               "win_rate_gap")


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
    against π_ref, ties ½) at KL 0: the curve then starts at π_ref, as BoN's does."""
    if "ref_reward" not in bon:
        return bon
    extra = []
    for seed, mine in bon.groupby(bon[SEED].map(_seed), dropna=False):
        if (mine["n"] == 1).any() or not mine["ref_reward"].notna().any():
            continue
        extra.append({**mine.iloc[0].to_dict(), "n": 1.0, "kl": 0.0, "reward": float(mine["ref_reward"].mean()),
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
    means = by_n[["kl", "reward", "win_rate"]].mean()
    for column in ("reward_se", "win_rate_se"):
        means[column] = by_n[column].first().where(by_n.size() == 1)
    return {_seed(seed): curve for seed, curve in curves.items()}, means.sort_index()


def at_kl(curve: pd.DataFrame, kl: float) -> dict:
    """BoN's values on `curve` (indexed by N, sorted; its `kl` BoN's own) at KL `kl`: N*, where the curve's KL is
    `kl`, and each column there, linear in log N* between the two neighbouring N whose KLs bracket `kl`. Every kl at
    or below the KL of N = 1 (π_ref) is N* = 1; NaN (no N*) below the smallest N's KL of a curve without N = 1, and
    beyond its largest N's (`beyond_pool`, N* = inf)."""
    ns = curve.index.to_numpy(dtype=float)
    kls = np.maximum.accumulate(curve["kl"].to_numpy(dtype=float))  # BoN's KL grows with N: an estimate's dip evened
    lo, hi, share = _bracket(kls, ns, kl)
    beyond = not math.isnan(kl) and kl > kls[-1]
    out = {"bon_n_at_kl": math.inf if beyond else math.nan, "beyond_pool": beyond}
    frac = math.nan
    if lo is not None:
        out["bon_n_at_kl"] = n_star = _n_between(ns[lo], ns[hi], share)
        frac = math.log(n_star / ns[lo]) / math.log(ns[hi] / ns[lo]) if hi != lo else 0.0
    for column in INTERPOLATED:
        name = f"bon_{column.removesuffix('_se')}_at_kl" + ("_se" if column.endswith("_se") else "")
        values = curve[column].to_numpy(dtype=float)
        out[name] = (1 - frac) * values[lo] + frac * values[hi] if lo is not None else math.nan
    return out


def _bracket(kls: np.ndarray, ns: np.ndarray, kl: float) -> tuple[int | None, int | None, float]:
    """(lo, hi, share): the curve's nodes around `kl` and its share of the way from lo's KL to hi's; (None, None,
    NaN) outside the curve. Where several N share a KL, the smallest N that reaches it."""
    if math.isnan(kl) or kl > kls[-1] or (kl < kls[0] and ns[0] != 1):
        return None, None, math.nan
    hi = int(np.searchsorted(kls, kl, side="left"))  # kls[hi − 1] < kl ≤ kls[hi]
    if hi == 0:
        return 0, 0, 0.0
    return hi - 1, hi, float((kl - kls[hi - 1]) / (kls[hi] - kls[hi - 1]))


def _continuous_kl(n: float) -> float:
    """log N − (N − 1)/N: BoN's KL for continuous rewards, the shape of BoN's KL between two pool sizes."""
    return math.log(n) - (n - 1) / n


def _n_between(n_lo: float, n_hi: float, share: float) -> float:
    """The N* between two pool sizes where BoN's KL has come `share` of the way from N_lo's to N_hi's, with the KL's
    shape in N between them that of continuous rewards, log N − (N − 1)/N (exact there; within ties the nodes' own
    KLs set its ends): bisection on log N. BoN's KL is far from linear in log N at small N; with this shape the
    values, linear in log N*, stay within 0.02 of BoN's exact curve between N = 1, 2, 4, …, 64 on the synthetic task,
    tied or not (tests/test_analysis_bon_gap.py)."""
    if n_lo == n_hi or share <= 0:
        return n_lo
    target = _continuous_kl(n_lo) + share * (_continuous_kl(n_hi) - _continuous_kl(n_lo))
    lo, hi = math.log(n_lo), math.log(n_hi)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _continuous_kl(math.exp(mid)) < target else (lo, mid)
        if hi - lo <= 1e-15:
            break
    return math.exp(0.5 * (lo + hi))


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
            notes.append(f"{set_label}: {len(below)} point(s) below BoN's KL at the pool's smallest N (no N = 1 "
                         "line): no BoN value")
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
