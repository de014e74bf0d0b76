"""Comparable sets and seed statistics: which points may share a frontier, and how a configuration's seeds become
one point with a 95% interval.

Comparable sets. Rewards, KLs and win rates are comparable only within one task variant, evaluation temperature,
reward output and reference cache size M (COMPARABLE). By default every combination of them found is a set of its
own, with its own frontier, BoN curve and panel (the sets found are logged); `group_by` names the columns that
define the sets (columns left out are pooled: `--group-by task` pools everything of a task into one frontier)."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence

import numpy as np
import pandas as pd

from vbon_exp.analysis.load import METRICS, AnalysisError, judge_columns
from vbon_exp.results import ID_COLUMNS, TASK_VARIANT, natural_key

log = logging.getLogger(__name__)

# What makes two points comparable: a reward–KL frontier compares points of one task and its variant (`task_variant`:
# e.g. the synthetic task's reward_levels, a language-model task's reference and reward models; missing on results
# lines from before the column: one default variant), one evaluation temperature (`eval_temperature`; the sampling
# temperature where a results line has none), one reward output (prob / logit / margin) and one reference cache
# size M (its F̂ is the trained objectives' reward).
COMPARABLE = ("task", TASK_VARIANT, "eval_temperature", "reward_output", "m")
DEFAULT_VARIANT = "defaults"  # a set label's name for a task's default variant, where the task has others
SET_NAMES = {"eval_temperature": "T_eval", "reward_output": "reward", "m": "M"}  # in set labels
SEED = "seed"
# Besides the identifying columns, what makes two runs different configurations: the evaluation temperature and the
# method's declared variant (vbon_exp.settings.objective: `variant()`); seeds are averaged only when these agree.
CONFIG_EXTRAS = ("eval_temperature", "variant")
CONFIDENCE = 0.95


# ---------------------------------------------------------------------------------------------------- which points


def plottable(points: pd.DataFrame) -> pd.Series:
    """Successful points with a finite reward and KL."""
    return (points["status"] == "ok") & np.isfinite(points["reward"]) & np.isfinite(points["kl"])


def is_bon_target(frame: pd.DataFrame) -> pd.Series:
    """BoN sampling's points, the π_BoN targets: objective `bon`, whose KL has an analytic value (`kl_analytic`)
    (BoN's relatives, soft or regularised, are methods of their own)."""
    if "kl_analytic" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["kl_analytic"].notna() & (frame["objective"] == "bon")


def distils_bon(frame: pd.DataFrame) -> pd.Series:
    """Points of objectives that aim at π_BoN at their `target_n` (the objective's `bon_target_n`: vBoN, BoN-SFT,
    BoNBoN, BOND, ...), BoN's own excepted."""
    aims = frame["target_n"].notna() if "target_n" in frame else pd.Series(False, index=frame.index)
    return aims & ~is_bon_target(frame)


# ---------------------------------------------------------------------------------------------------- comparable sets


def _values(frame: pd.DataFrame, column: str) -> list:
    """The distinct values of a column, missing ones as None, sorted as text."""
    return sorted({None if pd.isna(v) else v for v in frame[column]}, key=str)


def set_columns(points: pd.DataFrame, group_by: Sequence[str] | None = None) -> list[str]:
    """The columns whose values define the comparable sets, one frontier each.

    `group_by` None: all of COMPARABLE, so points that differ in any of them (task variant, evaluation temperature,
    reward output, M) are never on one frontier: each set gets its own frontier and panel (the sets found are
    logged). Otherwise the columns named (a subset of COMPARABLE; `task` is always one): the comparable columns left
    out are pooled into one frontier, as the user asked (e.g. `--group-by task`)."""
    if group_by is not None:
        unknown = [c for c in group_by if c not in COMPARABLE]
        if unknown:
            raise AnalysisError(f"--group-by {','.join(group_by)}: {', '.join(unknown)} is not one of the columns "
                                f"that define comparable sets ({','.join(COMPARABLE)})")
        return ["task", *(c for c in COMPARABLE[1:] if c in group_by)]
    ok = points[plottable(points)]
    for task, mine in ok.groupby("task"):
        for column in COMPARABLE[1:]:
            if column in mine and len(values := _values(mine, column)) > 1:
                log.info("%s: %s takes %d values (%s): one frontier per value (--group-by task pools them)", task,
                         column, len(values), ", ".join(map(text_or_dash, values)))
    return list(COMPARABLE)


def text_or_dash(value) -> str:
    """A set column's value as a label shows it: missing as -, floats shortest (512.0 → 512)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def label_sets(points: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`set`: the label of each point's comparable set, e.g. `synthetic · T_eval=1 · M=512` (columns without a value
    are left out; pooled columns are not part of it). A task variant shows only where its task has several, e.g.
    `synthetic · reward_levels=5 · T_eval=1 · M=512` beside `synthetic · defaults · T_eval=1 · M=512`."""
    points = points.copy()
    for column in columns:
        if column not in points:  # results lines from before the column (task_variant): one default variant
            points[column] = None
    varied = {task for task, mine in points.groupby("task") if len(_values(mine, TASK_VARIANT)) > 1} \
        if TASK_VARIANT in columns else set()
    labels = []
    for values in points[list(columns)].itertuples(index=False):
        parts = [text_or_dash(values[0])]
        for column, value in zip(columns[1:], values[1:]):
            if column == TASK_VARIANT:
                if values[0] in varied:
                    parts.append(DEFAULT_VARIANT if pd.isna(value) else str(value))
            elif not pd.isna(value):
                parts.append(f"{SET_NAMES.get(column, column)}={text_or_dash(value)}")
        labels.append(" · ".join(parts))
    points["set"] = labels
    return points


def sets_of(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["set"].unique(), key=natural_key)


# ---------------------------------------------------------------------------------------------------- seeds


def student_t_quantile(level: float, df: int) -> float:
    """t with P(|T| ≤ t) = level for Student's t with an integer df ≥ 1 (the 95% interval's multiplier t_{0.975,df}
    for level 0.95): its closed-form CDF for integer df (Abramowitz & Stegun 26.7.3–4, in θ = atan(t/√df)),
    P(|T| ≤ t) = (2/π)(θ + sinθ cosθ Σ_j a_j cos^{2j}θ) for odd df, sinθ Σ_j b_j cos^{2j}θ for even df, inverted by
    bisection on θ ∈ (0, π/2), where it increases."""
    def mass(theta: float) -> float:
        c2, total, term = math.cos(theta) ** 2, 0.0, 1.0
        for j in range(1, (df - 1) // 2 + 1 if df % 2 else df // 2 + 1):
            total += term
            term *= c2 * ((2 * j) / (2 * j + 1) if df % 2 else (2 * j - 1) / (2 * j))
        if df % 2:
            return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
        return math.sin(theta) * total

    lo, hi = 0.0, math.pi / 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mass(mid) < level else (lo, mid)
    return math.sqrt(df) * math.tan(0.5 * (lo + hi))


def mean_interval(values, own_se: float = math.nan, level: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high) of a metric over seeds: the Student-t interval mean ± t·s/√n over n ≥ 2 seeds; over one
    seed the run's own normal interval ± z·SE (NaN bounds where the metric has no SE: the exact values)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) >= 2:
        half = student_t_quantile(level, len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
    else:
        half = statistics.NormalDist().inv_cdf(0.5 + level / 2) * own_se
    return (mean, mean - half, mean + half) if math.isfinite(half) else (mean, math.nan, math.nan)


def config_columns(points: pd.DataFrame) -> list[str]:
    """What identifies a configuration, whose seeds are averaged into one point: its set, objective and every
    identifying column of its results line but the seed."""
    ids = [c for c in dict.fromkeys((*ID_COLUMNS, *CONFIG_EXTRAS)) if c in points and c not in (SEED, "objective")]
    return ["set", "objective", *ids]


def seed_mean_row(group: pd.DataFrame, metrics: Sequence[str]) -> dict:
    """Each metric's mean over the seeds of one configuration with its 95% interval (`mean_interval`, the run's
    own `<metric>_se` where there is one seed): `<metric>`, `<metric>_ci_low`, `<metric>_ci_high`."""
    row = {}
    for metric in metrics:
        if metric in group and group[metric].notna().any():
            own_se = group[f"{metric}_se"].iloc[0] if len(group) == 1 and f"{metric}_se" in group else math.nan
            row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = mean_interval(group[metric], own_se)
    return row


def aggregate_seeds(points: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: `seeds`, `runs`, `results_files`, and for each metric its mean over the seeds
    with the 95% interval (`mean_interval`) in `<metric>_ci_low` / `<metric>_ci_high`."""
    ok = points[plottable(points)]
    keys = config_columns(ok)
    metrics = [*METRICS, *(c for c in judge_columns(ok) if not c.endswith("_se"))]
    rows = []
    for key, group in ok.groupby(keys, dropna=False, sort=False):
        row = dict(zip(keys, key))
        row.update(seeds=group[SEED].nunique(dropna=False), runs=len(group))
        for column in ("objective_label", "target_n"):
            if column in group and group[column].notna().any():
                row[column] = group[column].dropna().iloc[0]
        if "results_file" in group:  # where the seeds came from
            row["results_files"] = " ".join(sorted(group["results_file"].astype(str), key=natural_key))
        rows.append({**row, **seed_mean_row(group, metrics)})
    return pd.DataFrame(rows, columns=None if rows else [*keys, "seeds", "runs", "reward", "kl"])
