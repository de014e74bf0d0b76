"""The reward–KL Pareto frontier of a sweep (`make pareto-plot`, `scripts/pareto_plot.py`).

Reads every `results.jsonl` under a runs directory (a Hydra multirun dir, or any tree of runs) into one table,
or the summaries of a wandb project's runs, and writes to `<RUNS>/pareto/` (or `--out`):

  points.csv               one row per results line (failed members too, with their error); its comparable `set`,
                           `on_frontier` (on its seed's frontier within its set), `on_frontier_without_bon`
  seed_means.csv           one row per configuration (its seeds averaged): mean and 95% interval of each metric
  frontier.csv             the seed-mean points on their set's frontier, by set and KL
  frontier_frequency.csv   per set and objective: the fraction of its points on the frontier, counted per seed,
                           mean and 95% interval over seeds, with and without BoN's points (also printed)
  regret.csv               exact tasks: per configuration, the exact regret below the exact frontier (seed mean and
                           95% interval); exact_frontier.csv: the exact frontier and π_BoN curves drawn
  reward_vs_kl.{png,pdf}   reward vs KL per set: seed means with 95% intervals, single seeds faint, the frontier,
                           BoN's points marked as the targets of the objectives that distil π_BoN
  win_rate_vs_kl.{png,pdf} win rate vs KL
  exact_vs_kl.{png,pdf}    exact tasks: exact reward and exact win rate vs exact KL under the exact frontiers
  vs_temperature.{png,pdf} reward and win rate vs evaluation temperature (only when the runs span > 1 temperature)
  judge_<name>_{reward,win_rate}_vs_kl.{png,pdf}  per evaluation judge (eval.judges): its reward, its win rate vs KL

Comparable sets. Rewards, KLs and win rates are comparable only within one task, evaluation temperature, reward
output and reference cache size M (COMPARABLE). By default every combination of them found is a set of its own,
with its own frontier and panel (the sets found are logged); `--group-by` names the columns that define the sets
(columns left out are pooled: `--group-by task` pools everything of a task into one frontier).

The frontier: maximise reward, minimise KL; a point is on it iff no other point of its set has reward ≥ and KL ≤
with one of the two strict (equal points do not dominate each other). Failed members and points without a finite
reward and KL are listed but neither plotted nor on the frontier.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vbon_exp.tracking import ID_COLUMNS

log = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"
# One marker per objective, in the order of their names; colours from tab10, then Dark2 (objective_styles). Legend
# names come from the results lines (`objective_label`, each objective's declared label), so no list here names the
# objectives.
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "p")
# What makes two points comparable: a reward–KL frontier compares points of one task, one evaluation temperature
# (`eval_temperature`; the sampling temperature where a results line has none), one reward output (prob / logit /
# margin) and one reference cache size M (its F̂ is the trained objectives' reward).
COMPARABLE = ("task", "eval_temperature", "reward_output", "m")
SET_NAMES = {"eval_temperature": "T_eval", "reward_output": "reward", "m": "M"}  # in set labels
SEED = "seed"
# Besides the identifying columns, results-line facts that make two runs different configurations (kl_rl's Φ):
# their seeds are averaged only when all of these agree.
CONFIG_EXTRAS = ("eval_temperature", "transform", "transform_t")
# The metrics averaged over seeds: mean, and `<metric>_ci_low` / `<metric>_ci_high`, the 95% interval.
METRICS = ("reward", "kl", "kl_analytic", "win_rate", "exact_reward", "exact_kl", "exact_win_rate", "exact_regret",
           "exact_win_rate_regret")
CONFIDENCE = 0.95
# Leading columns of points.csv / frontier.csv; the rest follow alphabetically.
LEAD_COLUMNS = (
    "set", "task", "objective", "algo", "bound", "beta", "n", "temperature", "eval_temperature", "reward_output", "m",
    "seed", "seeds", "runs", "status", "on_frontier", "on_frontier_without_bon", "reward", "reward_ci_low",
    "reward_ci_high", "reward_se", "kl", "kl_ci_low", "kl_ci_high", "kl_se", "kl_estimator", "kl_analytic",
    "win_rate", "win_rate_ci_low", "win_rate_ci_high", "win_rate_se", "exact_regret", "error_type", "error",
)
NUMERIC_COLUMNS = ("beta", "n", "temperature", "eval_temperature", "m", "seed", "reward", "reward_se", "kl", "kl_se",
                   "kl_analytic", "win_rate", "win_rate_se")
# results-line column → config key, for runs read back from wandb (their config holds the identifying columns; runs
# written since the objective declarations also hold the results line's own `results_id` columns)
CONFIG_COLUMNS = ID_COLUMNS


class ParetoError(Exception):
    """A problem the user fixes from the message alone (no results, no wandb, ...): exit 2, no traceback."""


# ---------------------------------------------------------------------------------------------------- reading


def _natural(text: str) -> tuple:
    """Sort key that puts member 2 before member 10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text)))


def find_results_files(runs_dir: Path) -> list[Path]:
    return sorted((p for p in Path(runs_dir).rglob(RESULTS_NAME) if p.is_file()), key=lambda p: _natural(p))


def load_points(runs_dir: str | Path) -> pd.DataFrame:
    """Every line of every `results.jsonl` under `runs_dir`, one row each (`results_file`, `line` say where)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ParetoError(f"runs directory {runs_dir} does not exist (expected a sweep dir holding "
                          f"{RESULTS_NAME} files, e.g. outputs/multirun/<date>/<time>)")
    files = find_results_files(runs_dir)
    if not files:
        raise ParetoError(f"no {RESULTS_NAME} files under {runs_dir} (looked for {runs_dir}/**/{RESULTS_NAME}; "
                          "each run writes one in its run dir: run a sweep first, e.g. "
                          "python -m vbon_exp -m +experiment=synthetic_pareto)")
    rows = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                log.warning("skipping unreadable line %s:%d (%s)", path, number, err)
                continue
            if isinstance(record, dict):
                rows.append({**record, "results_file": str(path.relative_to(runs_dir)), "line": number})
    if not rows:
        raise ParetoError(f"the {len(files)} {RESULTS_NAME} file(s) under {runs_dir} hold no results lines")
    return normalise(pd.DataFrame(rows))


def normalise(points: pd.DataFrame) -> pd.DataFrame:
    """The columns every later step relies on, with numeric columns as floats."""
    points = points.copy()
    for column in ("task", "objective", "status", "reward_output"):
        if column not in points:
            points[column] = None
    points["status"] = points["status"].fillna("ok")
    points["task"] = points["task"].fillna("?")
    points["objective"] = points["objective"].fillna("?")
    points = split_transforms(points)
    if "eval_temperature" in points:  # results lines from before the column: the sampling temperature
        points["eval_temperature"] = points["eval_temperature"].fillna(points.get("temperature"))
    else:
        points["eval_temperature"] = points.get("temperature")
    for column in NUMERIC_COLUMNS:
        points[column] = pd.to_numeric(points[column], errors="coerce") if column in points else np.nan
    for column in (*METRICS, *(f"{metric}_se" for metric in METRICS), "target_n", *judge_columns(points)):
        if column in points:
            points[column] = pd.to_numeric(points[column], errors="coerce")
    return points.reset_index(drop=True)


def split_transforms(points: pd.DataFrame) -> pd.DataFrame:
    """KL-RL with a calibrated reward transform Φ other than the identity (objective.transform) is its own method
    in every table, legend and frontier count: objective `kl_rl[cdf]`, label "KL-regularised RL (cdf)"."""
    if "transform" not in points:
        return points
    other = (points["objective"] == "kl_rl") & points["transform"].notna() & (points["transform"] != "identity")
    if other.any():
        points.loc[other, "objective"] = "kl_rl[" + points.loc[other, "transform"].astype(str) + "]"
        if "objective_label" in points:
            points.loc[other, "objective_label"] = (points.loc[other, "objective_label"].fillna("KL-RL").astype(str)
                                                    + " (" + points.loc[other, "transform"].astype(str) + ")")
    return points


def judge_columns(points: pd.DataFrame) -> list[str]:
    """The evaluation judges' columns (`judge/<name>/<metric>`, eval.judges)."""
    return [column for column in points if str(column).startswith("judge/")]


def _config_get(config: dict, key: str):
    """`a.b.c` from a nested config dict, or from one wandb flattened into `a.b.c` / `a/b/c` keys."""
    for flat in (key, key.replace(".", "/")):
        if flat in config:
            return _unwrap(config[flat])
    node = config
    for part in key.split("."):
        node = _unwrap(node)
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return _unwrap(node)


def _unwrap(value):
    """wandb's raw config stores `{"value": v, "desc": ...}`; the public API mostly unwraps it already."""
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
        return value["value"]
    return value


def _as_dict(mapping) -> dict:
    if mapping is None:
        return {}
    if isinstance(mapping, dict):
        return mapping
    for attribute in ("_json_dict", "_items"):  # wandb's summary / config wrappers
        inner = getattr(mapping, attribute, None)
        if isinstance(inner, dict):
            return inner
    try:
        return dict(mapping)
    except (TypeError, ValueError):
        return {}


def runs_to_frame(runs: Iterable) -> pd.DataFrame:
    """Points from wandb runs (objects with `.config`, `.summary`, `.state`, `.name`, `.path`, `.job_type`, as
    `wandb.Api().runs(...)` yields): the identifying columns from each run's config, the metrics from its summary
    (what `Tracker.write_point` put there). Runs of job type `pareto` (this module's own) are skipped."""
    rows = []
    for run in runs:
        if getattr(run, "job_type", None) == "pareto":
            continue
        config = _as_dict(getattr(run, "config", None))
        summary = _as_dict(getattr(run, "summary", None))
        row = {column: _config_get(config, key) for column, key in CONFIG_COLUMNS.items()}
        ids = _unwrap(config.get("results_id"))
        if isinstance(ids, dict):  # the results line's own identifying columns (algo None where no algo trains)
            row.update({key: _unwrap(value) for key, value in ids.items()})
        for key, value in summary.items():
            # wandb internals, the final/* and train/* histories (judge/<name>/* are results-line columns)
            if key.startswith("_") or ("/" in key and not key.startswith("judge/")):
                continue
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                row[key] = value
        state = getattr(run, "state", None)
        if state in (None, "finished") and row.get("reward") is not None:
            row["status"] = "ok"
        else:
            row["status"] = "failed"
            row["error"] = f"wandb run {getattr(run, 'name', '?')} is {state or 'unknown'}" + (
                "" if row.get("reward") is not None else " and has no reward in its summary")
        path = getattr(run, "path", None)
        row["wandb_run"] = "/".join(map(str, path)) if isinstance(path, (list, tuple)) else path
        row["wandb_name"] = getattr(run, "name", None)
        rows.append(row)
    if not rows:
        raise ParetoError("no vbon_exp runs found in the wandb project")
    return normalise(pd.DataFrame(rows))


def load_wandb_points(project: str, entity: str | None = None) -> pd.DataFrame:
    """Points from the runs of wandb project `project` (`entity/project` works too); needs network and a key."""
    try:
        import wandb
    except ImportError as err:
        raise ParetoError(f"--wandb-project needs wandb ({err}); pip install wandb") from None
    path = f"{entity}/{project}" if entity and "/" not in project else project
    try:
        runs = list(wandb.Api(timeout=30).runs(path))
    except Exception as err:  # offline, no API key, unknown project, ...
        raise ParetoError(
            f"could not read the runs of wandb project {path!r}: {type(err).__name__}: {err}. Reading a project "
            "needs network access and an API key (`wandb login`); without them, plot local results: "
            "scripts/pareto_plot.py <runs dir>") from None
    try:
        return runs_to_frame(runs)
    except ParetoError:
        raise ParetoError(f"no vbon_exp runs found in wandb project {path!r}") from None


# ---------------------------------------------------------------------------------------------------- comparable sets


def _values(frame: pd.DataFrame, column: str) -> list:
    """The distinct values of a column, missing ones as None, sorted as text."""
    return sorted({None if pd.isna(v) else v for v in frame[column]}, key=str)


def set_columns(points: pd.DataFrame, group_by: Sequence[str] | None = None) -> list[str]:
    """The columns whose values define the comparable sets, one frontier each.

    `group_by` None: all of COMPARABLE, so points that differ in any of them (evaluation temperature, reward output,
    M) are never on one frontier: each set gets its own frontier and panel (the sets found are logged). Otherwise the
    columns named (a subset of COMPARABLE; `task` is always one): the comparable columns left out are pooled into one
    frontier, as the user asked (e.g. `--group-by task`)."""
    if group_by is not None:
        unknown = [c for c in group_by if c not in COMPARABLE]
        if unknown:
            raise ParetoError(f"--group-by {','.join(group_by)}: {', '.join(unknown)} is not one of the columns that "
                              f"define comparable sets ({','.join(COMPARABLE)})")
        return ["task", *(c for c in COMPARABLE[1:] if c in group_by)]
    ok = points[plottable(points)]
    for task, mine in ok.groupby("task"):
        for column in COMPARABLE[1:]:
            if len(values := _values(mine, column)) > 1:
                log.info("%s: %s takes %d values (%s): one frontier per value (--group-by task pools them)", task,
                         column, len(values), ", ".join(map(_text_or_dash, values)))
    return list(COMPARABLE)


def _text_or_dash(value) -> str:
    """A set column's value as a label shows it: missing as -, floats shortest (512.0 → 512)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def label_sets(points: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`set`: the label of each point's comparable set, e.g. `synthetic · T_eval=1 · M=512` (columns without a value
    are left out; pooled columns are not part of it)."""
    points = points.copy()
    labels = []
    for values in points[list(columns)].itertuples(index=False):
        parts = [_text_or_dash(values[0])] + [f"{SET_NAMES.get(c, c)}={_text_or_dash(v)}"
                                             for c, v in zip(columns[1:], values[1:]) if not pd.isna(v)]
        labels.append(" · ".join(parts))
    points["set"] = labels
    return points


def sets_of(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["set"].unique(), key=_natural)


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
            row["results_files"] = " ".join(sorted(group["results_file"].astype(str), key=_natural))
        for metric in metrics:
            if metric in group and group[metric].notna().any():
                own_se = group[f"{metric}_se"].iloc[0] if len(group) == 1 and f"{metric}_se" in group else math.nan
                row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = mean_interval(group[metric], own_se)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else [*keys, "seeds", "runs", "reward", "kl"])


# ---------------------------------------------------------------------------------------------------- frontier


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


def plottable(points: pd.DataFrame) -> pd.Series:
    """Successful points with a finite reward and KL."""
    return (points["status"] == "ok") & np.isfinite(points["reward"]) & np.isfinite(points["kl"])


def is_bon_target(frame: pd.DataFrame) -> pd.Series:
    """BoN sampling's points, the π_BoN targets: the only policy whose KL has an analytic value (`kl_analytic`)."""
    return frame["kl_analytic"].notna() if "kl_analytic" in frame else pd.Series(False, index=frame.index)


def distils_bon(frame: pd.DataFrame) -> pd.Series:
    """Points of objectives that aim at π_BoN at their `target_n` (the objective's `bon_target_n`: vBoN, BoN-SFT,
    BoNBoN, BOND, ...), BoN's own excepted."""
    aims = frame["target_n"].notna() if "target_n" in frame else pd.Series(False, index=frame.index)
    return aims & ~is_bon_target(frame)


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


def objective_sort_key(name: str) -> tuple:
    return (str(name),)


def objective_styles(points: pd.DataFrame) -> dict:
    """objective -> (colour, marker, legend label), the same in every panel and figure of one table."""
    import matplotlib

    objectives = _objectives(points)
    # tab10 repeats after ten methods (the whole family is eleven); Dark2 carries on (tab20's light halves would
    # pair a method with its neighbour's hue)
    colours = matplotlib.colormaps["tab10"].colors + matplotlib.colormaps["Dark2"].colors
    labels = {}
    if "objective_label" in points:
        for objective, label in points[["objective", "objective_label"]].dropna().itertuples(index=False):
            labels.setdefault(objective, label)
    return {objective: (colours[i % len(colours)], MARKERS[i % len(MARKERS)], labels.get(objective, objective))
            for i, objective in enumerate(objectives)}


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
        for objective in sorted(points.loc[in_set, "objective"].unique(), key=objective_sort_key):
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
    """Per configuration of an exact task: its exact regrets below the exact reward and win-rate frontiers, mean
    over seeds with the 95% interval."""
    if "exact_regret" not in configs:
        return pd.DataFrame()
    keys = [c for c in ("set", "objective", "algo", "bound", "transform", "beta", "n", "seeds") if c in configs]
    values = [f"{metric}{suffix}" for metric in ("exact_regret", "exact_win_rate_regret")
              for suffix in ("", "_ci_low", "_ci_high") if f"{metric}{suffix}" in configs]
    exact = configs[configs["exact_regret"].notna()]
    order = exact.assign(_o=exact["objective"].map(objective_sort_key)).sort_values(["set", "_o", "beta"]).index
    return exact.loc[order, keys + values].reset_index(drop=True)


def ordered(points: pd.DataFrame) -> pd.DataFrame:
    """Leading columns first; rows by set, objective (by name), N, temperature, seed, then source."""
    keys = pd.DataFrame({
        "set": points["set"].map(_natural) if "set" in points else 0,
        "objective": points["objective"].map(objective_sort_key),
        "n": points["n"].fillna(np.inf),
        "temperature": points["temperature"].fillna(np.inf) if "temperature" in points else 0,
        "seed": points[SEED].fillna(np.inf) if SEED in points else 0,
        "source": points["results_file"].map(_natural) if "results_file" in points else 0,
        "line": points["line"] if "line" in points else 0,
    }, index=points.index)
    points = points.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)
    lead = [c for c in LEAD_COLUMNS if c in points]
    tail = sorted((c for c in points if c not in lead and c not in ("run_dir", "results_file", "line")),
                  key=lambda c: (c.removesuffix("_ci_low").removesuffix("_ci_high"), c.endswith("_ci_high")))
    last = [c for c in ("run_dir", "results_file", "line") if c in points]
    return points[lead + tail + last]


# ---------------------------------------------------------------------------------------------------- exact frontier
#
# On a task with an exact oracle (the synthetic task) the frontier over all policies is known: the oracle rebuilt
# from a run's saved config (<run dir>/.hydra/config.yaml; the synthetic task builds in seconds) gives the curves
# drawn under the exact points (`frontier_curves`), and the regret of results lines written before `exact_regret`.

REGRET_CHECK_TOLERANCE = 1e-6  # recorded vs rebuilt regret: both are float64 sums; more means another oracle


def _saved_config(row: pd.Series, runs_dir: Path | None) -> Path | None:
    candidates = []
    if runs_dir is not None and isinstance(row.get("results_file"), str):
        candidates.append(Path(runs_dir) / Path(row["results_file"]).parent / ".hydra" / "config.yaml")
    if isinstance(row.get("run_dir"), str):
        candidates.append(Path(row["run_dir"]) / ".hydra" / "config.yaml")
    return next((path for path in candidates if path.is_file()), None)


def oracle_spec(path: Path, temperature: float | None = None) -> tuple[str, dict]:
    """(what determines the oracle, as JSON: the task node and π_ref's temperature, the line's evaluation
    temperature (default: the run's sampling temperature); that and the cache dir). Only these nodes are resolved:
    others may hold interpolations whose resolvers live above this module."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    if temperature is None or not math.isfinite(temperature):
        temperature = OmegaConf.select(cfg, "sampling.temperature")
    spec = {"task": OmegaConf.to_container(cfg.task, resolve=True), "temperature": float(temperature),
            "max_new_tokens": OmegaConf.select(cfg, "sampling.max_new_tokens")}
    return json.dumps(spec, sort_keys=True), {**spec, "cache_dir": OmegaConf.select(cfg, "paths.cache_dir")}


def build_oracle(spec: dict):
    """The exact oracle of a run's task (None for a task without one), rebuilt on the CPU from `oracle_spec`. The
    task's artifacts are read from the run's cache dir when it is still there, else rebuilt in a temporary dir
    (the task config's seeds determine them)."""
    import torch
    from omegaconf import OmegaConf

    from vbon_exp.tasks import TASKS

    kind = TASKS[spec["task"]["name"]]
    task_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(kind.config), spec["task"]))
    cache_dir = Path(str(spec["cache_dir"]))
    with tempfile.TemporaryDirectory(prefix="pareto-oracle-") as scratch:
        task = kind.build(task_cfg, device=torch.device("cpu"),
                          cache_dir=str(cache_dir if (cache_dir / "models").is_dir() else scratch),
                          temperature=spec["temperature"], max_new_tokens=spec["max_new_tokens"], model=None,
                          reward=None)
    return task.oracle


def attach_exact(points: pd.DataFrame, runs_dir: Path | None) -> tuple[pd.DataFrame, dict, list[str]]:
    """(points with `exact_regret` filled where a results line lacks it, {set: the exact curves}, notes on what
    could not be drawn). Sets whose points have no exact values are skipped; so is a set whose runs were made
    with different task configs (no one exact frontier), or without saved configs (wandb)."""
    points, curves, notes, oracles = points.copy(), {}, [], {}
    if "exact_kl" not in points:
        return points, curves, notes
    exact = plottable(points) & points["exact_kl"].notna()
    for set_label in sets_of(points[exact]):
        rows = points[exact & (points["set"] == set_label)]
        specs = {}
        for _, row in rows.iterrows():
            path = _saved_config(row, runs_dir)
            if path is not None:
                key, spec = oracle_spec(path, row["eval_temperature"])  # the oracle at the line's evaluation T
                specs.setdefault(key, spec)
        if len(specs) != 1:
            notes.append(f"{set_label}: exact frontier not drawn: " + (
                "no saved run config (.hydra/config.yaml) beside the results" if not specs else
                f"its runs were made with {len(specs)} different task configs, so there is no one exact frontier"))
            continue
        (key, spec), = specs.items()
        oracle = oracles[key] = oracles.get(key) or build_oracle(spec)  # sets split by M share their task's
        if oracle is None or not hasattr(oracle, "frontier_curves"):
            continue
        curves[set_label] = oracle.frontier_curves()
        points = _fill_regret(points, rows.index, oracle, notes, set_label)
    return points, curves, notes


def _fill_regret(points: pd.DataFrame, index, oracle, notes: list[str], set_label: str) -> pd.DataFrame:
    """`exact_regret` / `exact_win_rate_regret` from the rebuilt oracle where the results lines lack them; where
    they have them, one is recomputed to check that the rebuilt oracle is the runs' own."""
    for column in ("exact_regret", "exact_win_rate_regret"):
        if column not in points:
            points[column] = np.nan
    missing = [i for i in index if pd.isna(points.at[i, "exact_regret"])]
    for i in missing:
        for column, value in oracle.frontier_regret(points.loc[i].to_dict()).items():
            points.at[i, column] = value
    recorded = [i for i in index if i not in missing]
    if recorded:
        i = recorded[0]
        again = oracle.frontier_regret(points.loc[i].to_dict())["exact_regret"]
        if abs(again - points.at[i, "exact_regret"]) > REGRET_CHECK_TOLERANCE:
            notes.append(f"{set_label}: the oracle rebuilt from the saved config gives regret {again:.6g} where the "
                         f"results line has {points.at[i, 'exact_regret']:.6g}: the curves drawn may not be the "
                         "runs' exact frontier")
    return points


def curves_frame(curves: dict) -> pd.DataFrame:
    """exact_frontier.csv: one row per curve point: set, curve (optimum_reward, optimum_win_rate: the frontiers;
    bon: π_BoN over N), kl, reward and/or win_rate."""
    frames = [pd.DataFrame({"set": set_label, "curve": name, **curve})
              for set_label, by_name in curves.items() for name, curve in by_name.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------------- plotting


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _objectives(points: pd.DataFrame) -> list[str]:
    return sorted(points["objective"].unique(), key=objective_sort_key)


def _errorbar(ax, x, y, xerr, yerr, *, colour, marker, label, filled=True, zorder=3):
    ax.errorbar(
        x, y, xerr=xerr, yerr=yerr, fmt=marker, color=colour, ecolor=colour, elinewidth=0.8, capsize=2,
        markersize=7, markerfacecolor=colour if filled else "none", markeredgecolor=colour, markeredgewidth=1.2,
        alpha=0.9, label=label, zorder=zorder,
    )


def _interval(frame: pd.DataFrame, column: str):
    """The 95% interval as errorbar's [below, above] (none drawn where it is unknown)."""
    if f"{column}_ci_low" not in frame:
        return None
    mean = frame[column].to_numpy(dtype=float)
    below = mean - frame[f"{column}_ci_low"].to_numpy(dtype=float)
    above = frame[f"{column}_ci_high"].to_numpy(dtype=float) - mean
    return np.nan_to_num(np.vstack([below, above]), nan=0.0)


def _grid(plt, panels: int, title: str, columns: int = 3):
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7.2 * columns, 5.6 * rows), squeeze=False)
    fig.suptitle(title, fontsize=13)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:panels])


def _same_set(a: pd.Series, b: pd.Series) -> bool:
    return all(c not in a or (pd.isna(a[c]) and pd.isna(b[c])) or a[c] == b[c] for c in ("set", *COMPARABLE))


def _draw_targets(ax, configs: pd.DataFrame, x: str, y: str, styles: dict) -> None:
    """BoN's points ringed as the targets, and a thin arrow from each point of an objective that aims at π_BoN
    (`distils_bon`: vBoN, BOND, BoNBoN, ...; β = 1/(N − 1)) to BoN's point at its N."""
    targets = configs[is_bon_target(configs) & configs[y].notna()]
    if targets.empty:
        return
    for objective, mine in targets.groupby("objective"):
        ax.scatter(mine[x], mine[y], s=330, marker="o", facecolors="none", edgecolors=styles[objective][0],
                   linewidths=1.0, linestyles="--", zorder=2,
                   label=f"{styles[objective][2]}: the π_BoN targets (arrows: from each point that distils π_BoN)")
    for _, row in configs[distils_bon(configs) & configs[y].notna()].iterrows():
        for _, target in targets[np.isclose(targets["n"], row["target_n"])].iterrows():
            if _same_set(row, target):
                ax.annotate("", xy=(target[x], target[y]), xytext=(row[x], row[y]), zorder=2.5,
                            arrowprops={"arrowstyle": "->", "color": styles[row["objective"]][0], "linewidth": 0.7,
                                        "alpha": 0.4, "shrinkA": 3, "shrinkB": 4})  # faint: the points come first


def _draw_points(ax, configs: pd.DataFrame, points: pd.DataFrame, x: str, y: str, styles: dict, *,
                 analytic: bool) -> None:
    """Seed means with their 95% intervals, each seed's point faint behind them; BoN's analytic-KL points hollow."""
    for objective in _objectives(configs):
        colour, marker, label = styles[objective]
        mine = configs[(configs["objective"] == objective) & configs[y].notna()].sort_values(x)
        if mine.empty:
            continue
        seeds = int(mine["seeds"].max())
        _errorbar(ax, mine[x], mine[y], _interval(mine, x), _interval(mine, y), colour=colour, marker=marker,
                  label=f"{label} ({len(mine)} points" + (f", mean of {seeds} seeds ± 95%)" if seeds > 1 else ")"))
        single = points[points["objective"] == objective]
        if seeds > 1:
            ax.scatter(single[x], single[y], s=16, marker=marker, color=colour, alpha=0.3, linewidths=0, zorder=2)
        if analytic and "kl_analytic" in mine and mine["kl_analytic"].notna().any():
            exact = mine[mine["kl_analytic"].notna()]
            _errorbar(ax, exact["kl_analytic"], exact[y], None, None, colour=colour, marker=marker,
                      label=f"{label}, analytic KL log N − (N−1)/N", filled=False, zorder=2)


def _draw_frontier(ax, configs: pd.DataFrame, y: str) -> None:
    front = configs[configs["on_frontier"]].sort_values(["kl", y])
    if len(front):
        ax.plot(front["kl"], front[y], "--", color="0.35", linewidth=1.2, zorder=1,
                label=f"Pareto frontier of the seed means ({len(front)} points)")
        ax.scatter(front["kl"], front[y], s=170, facecolors="none", edgecolors="0.2", linewidths=1.0, zorder=4)


LEGEND_INSIDE_MAX = 8  # legend entries that still fit inside a panel without covering its points
LEGEND_WIDTH_IN = 5.0  # inches added to each panel column for a legend placed beside it


def legend_beside(ax) -> bool:
    """A long legend goes beside its panel: inside, it would hide the points."""
    return len(ax.get_legend_handles_labels()[1]) > LEGEND_INSIDE_MAX


def _make_room_for_legends(fig, axes) -> None:
    """Widen the figure by a legend's width per panel column where the legends sit beside their panels (before
    tight_layout, so the panels keep their size)."""
    if axes and any(legend_beside(ax) for ax in axes):
        columns = axes[0].get_subplotspec().get_gridspec().ncols
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + LEGEND_WIDTH_IN * columns, height)


def _finish_panel(ax, title: str, xlabel: str, ylabel: str, empty: bool) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=12)
    ax.set_ylabel(ylabel, fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=10)
    if empty:
        ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=ax.transAxes)
    elif legend_beside(ax):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, framealpha=0.9)
    else:
        ax.legend(fontsize=8, loc="lower right", framealpha=0.9)


def plot_vs_kl(configs: pd.DataFrame, points: pd.DataFrame, metric: str, ylabel: str, *, title: str,
               frontier: bool):
    """`metric` vs KL, one panel per comparable set, one colour/marker per objective: seed means with 95%
    intervals over seeds, single seeds faint; with `frontier`, the set's frontier of the seed means dashed (its
    points ringed); BoN's points marked as the targets of the objectives that distil π_BoN."""
    plt = _pyplot()
    styles = objective_styles(points)
    ok = points[plottable(points)]
    sets = sets_of(configs) or ["?"]
    fig, axes = _grid(plt, len(sets), title)
    for ax, set_label in zip(axes, sets):
        mine = configs[(configs["set"] == set_label) & configs[metric].notna()] if metric in configs else configs[:0]
        _draw_points(ax, mine, ok[ok["set"] == set_label], "kl", metric, styles, analytic=True)
        _draw_targets(ax, mine, "kl", metric, styles)
        if frontier:
            _draw_frontier(ax, mine, metric)
        _finish_panel(ax, set_label, "KL(π ‖ π_ref)  [nats]", ylabel, mine.empty)
    _make_room_for_legends(fig, axes)
    fig.tight_layout()
    return fig


EXACT_PANELS = (  # (metric, the utility of its frontier curve, y label, the curve's legend)
    ("exact_reward", "reward", "exact reward", "exact frontier: π* ∝ π_ref·exp(r/β), one β for all prompts"),
    ("exact_win_rate", "win_rate", "exact win rate against π_ref",
     "exact frontier: π ∝ π_ref·exp(W/β), W = P(beat a π_ref sample)"),
)


def _draw_curves(ax, curves: dict, utility: str, label: str) -> None:
    optimum, bon_curve = curves.get(f"optimum_{utility}"), curves.get("bon")
    if optimum:
        ax.plot(optimum["kl"], optimum[utility], "-", color="black", linewidth=1.4, zorder=1, label=label)
    if bon_curve:
        ax.plot(bon_curve["kl"], bon_curve[utility], ":", color="0.45", linewidth=1.4, zorder=1,
                label="exact π_BoN over N (the targets' curve)")


def _zoom(ax, frame: pd.DataFrame, x: str, y: str, curves: dict, utility: str) -> None:
    """Axes on the points (the curves run on to the greedy policy's KL): x up to 1.15 × the largest point's."""
    top = float(np.nanmax(frame[f"{x}_ci_high"].fillna(frame[x]) if f"{x}_ci_high" in frame else frame[x]))
    right = 1.15 * top if top > 0 else 1.0
    ys = [frame[column].to_numpy(dtype=float) for column in (y, f"{y}_ci_low", f"{y}_ci_high") if column in frame]
    for curve in (curves.get(f"optimum_{utility}"), curves.get("bon")):
        if curve:
            kl, value = np.asarray(curve["kl"]), np.asarray(curve[utility])
            ys.append(value[kl <= right])
    ys = np.concatenate(ys)
    low, high = float(np.nanmin(ys)), float(np.nanmax(ys))
    pad = 0.06 * (high - low or 1.0)
    ax.set_xlim(-0.02 * right, right)
    ax.set_ylim(low - pad, high + pad)


def plot_exact(configs: pd.DataFrame, points: pd.DataFrame, curves: dict):
    """Exact reward and exact win rate vs exact KL, one row per set with exact values: the exact frontiers and the
    π_BoN curve (where the oracle could be rebuilt), seed means with 95% intervals, single seeds faint, BoN's
    points as the targets."""
    plt = _pyplot()
    styles = objective_styles(points)
    ok = points[plottable(points)]
    sets = sets_of(configs[configs["exact_kl"].notna()])
    fig, axes = _grid(plt, 2 * len(sets), "exact values (the task's oracle) vs exact KL, under the exact frontiers",
                      columns=2)
    for row, set_label in enumerate(sets):
        mine = configs[(configs["set"] == set_label) & configs["exact_kl"].notna()]
        for ax, (metric, utility, ylabel, label) in zip(axes[2 * row:2 * row + 2], EXACT_PANELS):
            _draw_curves(ax, curves.get(set_label, {}), utility, label)
            _draw_points(ax, mine, ok[ok["set"] == set_label], "exact_kl", metric, styles, analytic=False)
            _draw_targets(ax, mine, "exact_kl", metric, styles)
            _zoom(ax, mine, "exact_kl", metric, curves.get(set_label, {}), utility)
            _finish_panel(ax, set_label, "exact KL(π ‖ π_ref)  [nats]", ylabel, mine.empty)
    _make_room_for_legends(fig, axes)
    fig.tight_layout()
    return fig


def plot_vs_temperature(configs: pd.DataFrame, points: pd.DataFrame):
    """Reward and win rate vs evaluation temperature (`eval_temperature`: the sampling temperature unless the runs
    set eval.temperatures): one line per (objective, N), and per sampling temperature where policies were evaluated
    at other temperatures than they sampled at in training (the paper's TL;DR figure: one line per trained policy);
    the seed means with their 95% intervals (of the run itself with one seed)."""
    plt = _pyplot()
    ok = configs[np.isfinite(configs["eval_temperature"])]
    trained_at = ok["temperature"].round(6) if bool((ok["eval_temperature"] != ok["temperature"]).any()) else None
    metrics = [(m, label) for m, label in (("reward", "reward"), ("win_rate", "win rate against π_ref samples"))
               if m in ok]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5.0), squeeze=False)
    styles = objective_styles(points)
    tasks = sorted(ok["task"].unique())
    fig.suptitle("vs evaluation temperature" + (f" (task: {', '.join(tasks)})" if tasks else ""), fontsize=13)
    dashes = ["-", "--", ":", "-."]
    for ax, (metric, ylabel) in zip(axes[0], metrics):
        for objective in _objectives(ok):
            colour, marker, label = styles[objective]
            rows = ok[(ok["objective"] == objective) & np.isfinite(ok[metric])]
            ns = sorted(rows["n"].round(6).dropna().unique())
            keys = [rows["n"].round(6)] + ([] if trained_at is None else [trained_at.loc[rows.index]])
            for k, (key, series) in enumerate(rows.groupby(keys, dropna=False)):
                key = key if isinstance(key, tuple) else (key,)
                series = series.sort_values("eval_temperature")
                ax.errorbar(series["eval_temperature"], series[metric], yerr=_interval(series, metric),
                            fmt=marker + dashes[k % len(dashes)], color=colour, markersize=6, capsize=2,
                            linewidth=1.3, label=_series_label(label, key[0], len(ns) > 1) + (
                                "" if trained_at is None else f", trained at T = {key[1]:.3g}") + (
                                "" if len(tasks) < 2 else f" [{', '.join(sorted(series['task'].unique()))}]"))
        ax.set_xlabel("evaluation temperature", fontsize=12)
        ax.set_ylabel(ylabel, fontsize=12)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
        ax.legend(fontsize=9, framealpha=0.9)
    fig.tight_layout()
    return fig


def judge_figures(configs: pd.DataFrame, points: pd.DataFrame) -> dict:
    """Per evaluation judge (eval.judges) in the results: its reward (`judge_<name>_reward_vs_kl`) and its win rate
    against π_ref samples it scored (`judge_<name>_win_rate_vs_kl`) vs KL, one panel per set (the frontier is the
    training reward's, so it is not drawn)."""
    names = sorted({column.split("/")[1] for column in judge_columns(points)})
    figures = {}
    for name in names:
        for metric, ylabel in (("reward", "reward"), ("win_rate", "win rate against π_ref samples")):
            column = f"judge/{name}/{metric}"
            if column in configs and np.isfinite(configs[column]).any():
                figures[f"judge_{name}_{metric}_vs_kl"] = plot_vs_kl(
                    configs, points, column, f"{ylabel} (judge: {name})", title=f"{ylabel} vs KL, judged by {name}",
                    frontier=False)
    return figures


def _series_label(label: str, n: float, many: bool) -> str:
    return f"{label}, N = {n:.3g}" if many and np.isfinite(n) else label


def save_figure(fig, out_dir: Path, stem: str) -> Path:
    png = out_dir / f"{stem}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight")  # "tight": a legend placed beside its panel is kept
    fig.savefig(out_dir / f"{stem}.pdf", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png


# ---------------------------------------------------------------------------------------------------- wandb


def _table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """wandb.Table wants one type per column: text columns as strings ('' for missing)."""
    frame = frame.copy()
    for column in frame:
        if frame[column].dtype == object or str(frame[column].dtype).startswith(("string", "str")):
            frame[column] = frame[column].map(lambda v: "" if v is None or (isinstance(v, float) and
                                                                           math.isnan(v)) else str(v))
        elif frame[column].dtype == bool:
            frame[column] = frame[column].astype(int)
    return frame


def log_to_wandb(out_dir: Path, figures: dict[str, Path], tables: dict[str, pd.DataFrame], *, mode: str,
                 project: str, entity: str | None, name: str, source: str) -> str | None:
    """The plots (wandb.Image) and tables (wandb.Table) in a wandb run of their own, job type `pareto`."""
    import wandb

    run = wandb.init(project=project, entity=entity, name=name, job_type="pareto", dir=str(out_dir), mode=mode,
                     config={"source": source}, reinit="finish_previous",
                     settings=wandb.Settings(silent=True, console="off"))
    try:
        run.log({**{key: wandb.Image(str(path)) for key, path in figures.items()},
                 **{key: wandb.Table(dataframe=_table_frame(frame)) for key, frame in tables.items()}})
        frequency = tables.get("frontier_frequency")
        if frequency is not None:
            one_set = frequency["set"].nunique() == 1
            run.summary.update({f"frontier_fraction/{'' if one_set else row.set + '/'}{row.objective}":
                                row.on_frontier_mean for row in frequency.itertuples()
                                if np.isfinite(row.on_frontier_mean)})
        where = str(Path(run.dir).parent) if mode == "offline" else getattr(run, "url", None)
    finally:
        run.finish()
    return where


# ---------------------------------------------------------------------------------------------------- CLI


def newest_sweep(output_root: Path) -> Path:
    """The newest Hydra multirun dir, `<output_root>/multirun/<date>/<time>` (names sort by time)."""
    sweeps = sorted(p for p in (Path(output_root) / "multirun").glob("*/*") if p.is_dir())
    if not sweeps:
        raise ParetoError(f"no sweep found: {Path(output_root) / 'multirun'}/<date>/<time> does not exist. Run "
                          "one (python -m vbon_exp -m +experiment=synthetic_pareto) or name the runs dir: "
                          "make pareto-plot RUNS=<dir>")
    return sweeps[-1]


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _mean_and_interval(mean: float, low: float, high: float, form: str = ".2f") -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:{form}}" + (f" [{low:{form}}, {high:{form}}]" if np.isfinite(low) else "")


def format_frequency(frequency: pd.DataFrame) -> str:
    """The frontier frequency of each set as a table: mean over seeds [95% interval]."""
    blocks = []
    for set_label, mine in frequency.groupby("set", sort=False):
        shown = pd.DataFrame({
            "objective": mine["objective"], "seeds": mine["seeds"], "points": mine["points"],
            "on frontier": [_mean_and_interval(*v) for v in mine[["on_frontier_mean", "ci_low", "ci_high"]].values],
            "without BoN": [_mean_and_interval(*v) for v in mine[
                ["on_frontier_mean_without_bon", "ci_low_without_bon", "ci_high_without_bon"]].values],
            "failed": mine["failed"]})
        blocks.append(f"[{set_label}]\n" + shown.to_string(index=False))
    return "\n".join(blocks)


def format_regret(regret: pd.DataFrame) -> str:
    shown = regret[[c for c in ("set", "objective", "beta", "n", "seeds") if c in regret]].copy()
    shown["exact regret"] = [_mean_and_interval(*v, form=".3g") for v in
                             regret[["exact_regret", "exact_regret_ci_low", "exact_regret_ci_high"]].values]
    return shown.to_string(index=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pareto_plot.py",
        description="The reward–KL Pareto frontier of a sweep: reads every results.jsonl under RUNS (or a wandb "
                    "project's runs), writes points.csv, seed_means.csv, frontier.csv, frontier_frequency.csv, "
                    "regret.csv (exact tasks) and the plots (PNG + PDF) to RUNS/pareto/.")
    parser.add_argument("runs", nargs="?", default=None,
                        help="runs dir to read (searched recursively for results.jsonl); default: the newest "
                             "<output-root>/multirun/<date>/<time>")
    parser.add_argument("--out", default=None, help="output dir (default: RUNS/pareto, or "
                                                    "<output-root>/pareto/<project> with --wandb-project)")
    parser.add_argument("--output-root", default="outputs", help="where sweeps are found (default: outputs)")
    parser.add_argument("--group-by", default=None, metavar="COLUMNS",
                        help=f"comma-separated columns that define the comparable sets, one frontier per set, from "
                             f"{','.join(COMPARABLE)} (task always; those left out are pooled, e.g. --group-by task "
                             "pools everything of a task). Default: all of them (one frontier per set)")
    parser.add_argument("--wandb-project", default=None,
                        help="read points from this wandb project's runs (wandb.Api; needs network and an API key) "
                             "instead of local results.jsonl files")
    parser.add_argument("--wandb-entity", default=None, help="wandb entity of --wandb-project and of the logged run")
    parser.add_argument("--wandb-mode", default=None, choices=("online", "offline", "disabled"),
                        help="log the plots and tables to a wandb run (job type pareto); default: $WANDB_MODE, else "
                             "online with an API key, else offline")
    parser.add_argument("--log-project", default=None,
                        help="wandb project of that run (default: --wandb-project, else vbon_exp)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _main(args)
    except ParetoError as err:
        print(f"pareto_plot: error: {err}", file=sys.stderr)
        return 2


def _read(args) -> tuple[pd.DataFrame, str, Path, Path | None]:
    """(points, where they came from, output dir, the runs dir: None for wandb)."""
    if args.wandb_project:
        if args.runs:
            raise ParetoError("give either a runs dir or --wandb-project, not both")
        points = load_wandb_points(args.wandb_project, args.wandb_entity)
        out_dir = Path(args.out or Path(args.output_root) / "pareto" / args.wandb_project.replace("/", "_"))
        return points, f"wandb:{args.wandb_project}", out_dir, None
    runs = Path(args.runs) if args.runs else newest_sweep(Path(args.output_root))
    return load_points(runs), str(runs), Path(args.out or runs / "pareto"), runs


def tables(points: pd.DataFrame, group_by: Sequence[str] | None, runs_dir: Path | None) -> dict:
    """Every table and the exact curves, in data-flow order: sets → exact regret → per-seed frontiers → seed
    means → their frontier → frequency and regret."""
    points = label_sets(points, set_columns(points, group_by))
    points, curves, notes = attach_exact(points, runs_dir)
    points = ordered(add_seed_frontiers(points))
    configs = add_frontier(aggregate_seeds(points))
    configs = ordered(configs) if len(configs) else configs
    return {"points": points, "seed_means": configs, "curves": curves, "notes": notes,
            "frontier": configs[configs["on_frontier"]].sort_values(["set", "kl", "reward"]) if len(configs)
            else configs, "frontier_frequency": frontier_frequency(points), "regret": regret_table(configs)}


def _write(out: dict, out_dir: Path) -> list[str]:
    written = []
    for name in ("points", "seed_means", "frontier", "frontier_frequency", "regret"):
        if name in ("points", "frontier_frequency") or len(out[name]):
            out[name].to_csv(out_dir / f"{name}.csv", index=False)
            written.append(f"{name}.csv")
    if out["curves"]:
        curves_frame(out["curves"]).to_csv(out_dir / "exact_frontier.csv", index=False)
        written.append("exact_frontier.csv")
    return written


def _report(out: dict, source: str) -> None:
    points = out["points"]
    failed = points[points["status"] != "ok"]
    print(f"pareto: {len(points)} results lines from {source}: {int(plottable(points).sum())} plotted, "
          f"{len(failed)} failed; {points.loc[plottable(points), 'set'].nunique()} comparable set(s)")
    for _, row in failed.iterrows():
        print(f"  failed: {row['objective']} beta={row['beta']} n={row['n']} seed={row['seed']}: "
              f"{_text(row.get('error_type'))}: {_text(row.get('error'))}")
    print("\nfrontier frequency (fraction of each objective's points on its seed's frontier, within its set; mean "
          "over seeds [95% t-interval]):")
    print(format_frequency(out["frontier_frequency"]))
    if len(out["regret"]):
        print("\nexact regret (exact frontier reward at the point's exact KL − its exact reward; mean over seeds "
              "[95% interval]):")
        print(format_regret(out["regret"]))
    for note in out["notes"]:
        print(f"note: {note}")


def _figures(out: dict, out_dir: Path) -> dict[str, Path]:
    points, configs = out["points"], out["seed_means"]
    figures = {
        "reward_vs_kl": save_figure(plot_vs_kl(
            configs, points, "reward", "reward",
            title="reward vs KL (dashed: the Pareto frontier of each comparable set)", frontier=True),
            out_dir, "reward_vs_kl"),
        "win_rate_vs_kl": save_figure(plot_vs_kl(
            configs, points, "win_rate", "win rate against π_ref samples", title="win rate vs KL", frontier=False),
            out_dir, "win_rate_vs_kl"),
    }
    if "exact_kl" in configs and configs["exact_kl"].notna().any():
        figures["exact_vs_kl"] = save_figure(plot_exact(configs, points, out["curves"]), out_dir, "exact_vs_kl")
    if configs["eval_temperature"].nunique() > 1:
        figures["vs_temperature"] = save_figure(plot_vs_temperature(configs, points), out_dir, "vs_temperature")
    figures.update({stem: save_figure(fig, out_dir, stem) for stem, fig in judge_figures(configs, points).items()})
    return figures


def _main(args) -> int:
    from vbon_exp.tracking import resolve_wandb_mode

    try:
        mode = resolve_wandb_mode(args.wandb_mode)
    except ValueError as err:  # a bad $WANDB_MODE
        raise ParetoError(str(err)) from None
    points, source, out_dir, runs_dir = _read(args)
    group_by = [c.strip() for c in args.group_by.split(",") if c.strip()] if args.group_by is not None else None
    out = tables(points, group_by, runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _write(out, out_dir)
    _report(out, source)
    if not plottable(out["points"]).any():
        raise ParetoError(f"none of the {len(points)} results lines from {source} is a successful run with a "
                          f"reward and a KL: nothing to plot (see {out_dir / 'points.csv'})")
    figures = _figures(out, out_dir)
    print(f"\nwritten to {out_dir}/: {', '.join(written)}, " + ", ".join(f"{stem}.png/.pdf" for stem in figures))
    if mode != "disabled":
        entity, _, project = (args.wandb_project or "").rpartition("/")
        try:
            where = log_to_wandb(
                out_dir, figures, {name: out[name] for name in ("points", "seed_means", "frontier",
                                                                "frontier_frequency", "regret") if len(out[name])},
                mode=mode, project=args.log_project or project or "vbon_exp", entity=args.wandb_entity or entity,
                name=f"pareto-{project or Path(source).name}", source=source)
        except Exception as err:  # the local files are written; say why wandb did not take them
            print(f"pareto_plot: error: logging to wandb ({mode}) failed: {type(err).__name__}: {err} (the files in "
                  f"{out_dir} are written; --wandb-mode offline or disabled avoids the server)", file=sys.stderr)
            return 1
        print(f"wandb ({mode}): {where}")
    return 0
