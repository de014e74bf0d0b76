"""Reading what runs wrote into one normalised table: results files (vbon_exp.results), wandb runs, samples.

`load_points` reads every `results.jsonl` under a runs dir, `load_wandb_points` the summaries of a wandb project's
runs (`runs_to_frame`); both end in `normalise`, so every later step sees the same columns with the same types.
`load_samples` reads the runs' `samples.parquet` (the evaluation's samples) with each run's identifying columns."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vbon_exp.results import ID_COLUMNS, RESULTS_FILE, SAMPLES_FILE, find_files, read_lines, read_results

log = logging.getLogger(__name__)

# The metrics averaged over seeds: mean, and `<metric>_ci_low` / `<metric>_ci_high`, the 95% interval.
METRICS = ("reward", "kl", "kl_analytic", "win_rate", "exact_reward", "exact_kl", "exact_win_rate", "exact_regret",
           "exact_win_rate_regret", "ref_reward")
NUMERIC_COLUMNS = ("beta", "n", "temperature", "eval_temperature", "m", "seed", "reward", "reward_se", "kl", "kl_se",
                   "kl_analytic", "win_rate", "win_rate_se")
# results-line column → config key, for runs read back from wandb (their config holds the identifying columns; runs
# written since the objective declarations also hold the results line's own `results_id` columns)
CONFIG_COLUMNS = ID_COLUMNS


class AnalysisError(Exception):
    """A problem the user fixes from the message alone (no results, no wandb, ...): exit 2, one line, no
    traceback."""


# ---------------------------------------------------------------------------------------------------- results files


def load_points(runs_dir: str | Path) -> pd.DataFrame:
    """Every line of every `results.jsonl` under `runs_dir`, one row each (`results_file`, `line` say where)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise AnalysisError(f"runs directory {runs_dir} does not exist (expected a sweep dir holding "
                            f"{RESULTS_FILE} files, e.g. outputs/multirun/<date>/<time>)")
    rows = read_results(runs_dir)
    if not rows:
        files = find_files(runs_dir)
        if not files:
            raise AnalysisError(f"no {RESULTS_FILE} files under {runs_dir} (looked for {runs_dir}/**/{RESULTS_FILE}; "
                                "each run writes one in its run dir: run a sweep first, e.g. "
                                "python -m vbon_exp -m +experiment=synthetic_pareto)")
        raise AnalysisError(f"the {len(files)} {RESULTS_FILE} file(s) under {runs_dir} hold no results lines")
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
    points = split_variants(legacy_variants(points))
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


def legacy_variants(points: pd.DataFrame) -> pd.DataFrame:
    """Results lines from before the settings declared every variant carried a reward transform Φ in `transform`
    (and exp_cdf's t in `transform_t`) but no `variant`: Φ other than the identity is their variant, spelt as the
    settings spell it now (vbon_exp.settings.objective: "cdf", "exp_cdf t=2")."""
    if "transform" not in points:
        return points
    if "variant" not in points:
        points["variant"] = None
    old = points["variant"].isna() & points["transform"].notna() & (points["transform"] != "identity")
    if old.any():
        t = points["transform_t"] if "transform_t" in points else pd.Series(np.nan, index=points.index)
        spelt = points["transform"].astype(str)
        with_t = old & (points["transform"] == "exp_cdf") & t.notna()
        spelt = spelt.where(~with_t, spelt + " t=" + t.map(lambda v: f"{v:g}" if pd.notna(v) else ""))
        points.loc[old, "variant"] = spelt[old]
    return points


def split_variants(points: pd.DataFrame) -> pd.DataFrame:
    """An objective run with settings of its own beyond β and N — soft BoN's λ, KL-RL's Φ, BoN drawn afresh — says
    so in its results line's `variant` (declared by its settings: vbon_exp.settings.objective, e.g. "λ=0.5"): each
    variant is its own method in every table, legend and frontier count: objective `soft_bon[λ=0.5]`, label "soft
    BoN (λ=0.5)". A label that is its variant's name already stays as it is."""
    if "variant" not in points:
        return points
    other = points["variant"].notna() & (points["variant"].astype(str) != "")
    if other.any():
        variant = points.loc[other, "variant"].astype(str)
        points.loc[other, "objective"] = points.loc[other, "objective"].astype(str) + "[" + variant + "]"
        if "objective_label" in points:
            label = points.loc[other, "objective_label"].fillna(points.loc[other, "objective"]).astype(str)
            same = label == variant  # the external policy's own label
            points.loc[other, "objective_label"] = label.where(same, label + " (" + variant + ")")
    return points


def judge_columns(points: pd.DataFrame) -> list[str]:
    """The evaluation judges' columns (`judge/<name>/<metric>`, eval.judges)."""
    return [column for column in points if str(column).startswith("judge/")]


def newest_sweep(output_root: Path) -> Path:
    """The newest Hydra multirun dir, `<output_root>/multirun/<date>/<time>` (names sort by time)."""
    sweeps = sorted(p for p in (Path(output_root) / "multirun").glob("*/*") if p.is_dir())
    if not sweeps:
        raise AnalysisError(f"no sweep found: {Path(output_root) / 'multirun'}/<date>/<time> does not exist. Run "
                            "one (python -m vbon_exp -m +experiment=synthetic_pareto) or name the runs dir: "
                            "make pareto-plot RUNS=<dir>")
    return sweeps[-1]


# ---------------------------------------------------------------------------------------------------- wandb runs


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


def _run_row(run) -> dict:
    """One wandb run as a results line: identifying columns from its config, metrics from its summary."""
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
    return row


def runs_to_frame(runs: Iterable) -> pd.DataFrame:
    """Points from wandb runs (objects with `.config`, `.summary`, `.state`, `.name`, `.path`, `.job_type`, as
    `wandb.Api().runs(...)` yields): the identifying columns from each run's config, the metrics from its summary
    (what `Tracker.write_point` put there). Runs of job type `pareto` (the analysis's own) are skipped."""
    rows = [_run_row(run) for run in runs if getattr(run, "job_type", None) != "pareto"]
    if not rows:
        raise AnalysisError("no vbon_exp runs found in the wandb project")
    return normalise(pd.DataFrame(rows))


def load_wandb_points(project: str, entity: str | None = None) -> pd.DataFrame:
    """Points from the runs of wandb project `project` (`entity/project` works too); needs network and a key."""
    try:
        import wandb
    except ImportError as err:
        raise AnalysisError(f"--wandb-project needs wandb ({err}); pip install wandb") from None
    path = f"{entity}/{project}" if entity and "/" not in project else project
    try:
        runs = list(wandb.Api(timeout=30).runs(path))
    except Exception as err:  # offline, no API key, unknown project, ...
        raise AnalysisError(
            f"could not read the runs of wandb project {path!r}: {type(err).__name__}: {err}. Reading a project "
            "needs network access and an API key (`wandb login`); without them, plot local results: "
            "scripts/pareto_plot.py <runs dir>") from None
    try:
        return runs_to_frame(runs)
    except AnalysisError:
        raise AnalysisError(f"no vbon_exp runs found in wandb project {path!r}") from None


# ---------------------------------------------------------------------------------------------------- samples


def run_identity(run_dir: Path) -> dict:
    """A run's identifying columns (vbon_exp.results.ID_COLUMNS and its `objective_label`) from its results.jsonl:
    those every successful line agrees on (a run evaluated at several temperatures, or BoN with n=all, has lines
    that differ in `eval_temperature`, `n`, `beta`; those are left out). {} without results."""
    path = Path(run_dir) / RESULTS_FILE
    lines = read_lines(path) if path.is_file() else []
    lines = [line for line in lines if line.get("status", "ok") == "ok"] or lines
    identity = {}
    for column in (*ID_COLUMNS, "objective_label"):
        values = {repr(line.get(column)) for line in lines}
        if lines and len(values) == 1:
            identity[column] = lines[0].get(column)
    return identity


def load_samples(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Every run's `samples.parquet` concatenated: its columns (prompt_index, prompt, sample, response, reward,
    logp_policy, logp_ref, kl_term, eval_temperature, seed, objective, bon_n, ...), each run's identifying columns
    from its results.jsonl where the samples lack them (`run_identity`), and `run_dir`. A dir without the file is
    skipped with a warning; none with one is an AnalysisError."""
    frames = []
    for run_dir in map(Path, run_dirs):
        path = run_dir / SAMPLES_FILE
        if not path.is_file():
            log.warning("%s: no %s (a run written before samples were saved, or not a run dir)", run_dir,
                        SAMPLES_FILE)
            continue
        samples = pd.read_parquet(path)
        for column, value in run_identity(run_dir).items():
            if column not in samples:
                samples[column] = value
        frames.append(samples.assign(run_dir=str(run_dir)))
    if not frames:
        raise AnalysisError(f"none of the {len(run_dirs)} run dir(s) has a {SAMPLES_FILE} "
                            f"({', '.join(map(str, run_dirs))})")
    # a run with no rows (BoN from the pool keeps no responses) would turn the others' int columns into floats
    return pd.concat([f for f in frames if len(f)] or frames, ignore_index=True)
