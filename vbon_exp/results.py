"""The results line: what a run writes beside itself, and the one writer and reader of it.

Every run appends one line per evaluation point (per evaluation temperature, and per N for BoN from the pool) to
`<run_dir>/results.jsonl`, whatever wandb's mode, so a sweep is analysed with no server; a sweep member that fails
appends one line too (`failed_line`: its identifying columns, `status: failed`, the error). Beside it a run writes
`train_log.jsonl` (the training curve), `samples.parquet` (the evaluation's samples, vbon_exp/evaluation) and, on a
task with an exact oracle, `exact_frontier.json` (the exact reward- and win-rate–KL frontiers and the π_BoN curve
the analysis draws). This module imports nothing of the package: every layer above the leaves
(errors, meters, storage, launch, progress: pyproject.toml's layers) may read or write these files."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
TRAIN_LOG_FILE = "train_log.jsonl"
SAMPLES_FILE = "samples.parquet"
EXACT_FRONTIER_FILE = "exact_frontier.json"

# The identifying columns of a results line and the config key each comes from: what run.py writes, what a failed
# member's line keeps and what the analysis reads back from wandb run configs. (`algo` and the RL trainers' KL
# choices `kl_in`, `kl_penalty`, `target_kl` are None for objectives that train without conf/algo;
# `eval_temperature` is the temperature a line's policy was evaluated at: the sampling temperature unless
# `eval.temperatures` lists others, then each line sets its own.)
ID_COLUMNS = {
    "task": "task.name", "objective": "objective.name", "algo": "algo.name", "bound": "objective.bound",
    "beta": "objective.beta", "n": "objective.n", "temperature": "sampling.temperature", "m": "reference.m",
    "test_m": "reference.test_m", "seed": "seed", "reward_output": "reward.output",
    "eval_temperature": "sampling.temperature", "kl_in": "algo.kl_in", "kl_penalty": "algo.kl_estimator",
    "target_kl": "algo.target_kl",
}
# the columns that belong to the RL trainers' settings (None on a line of an objective that trains without them)
ALGO_COLUMNS = ("algo", "kl_in", "kl_penalty", "target_kl")
# Which variant of its task a line's run ran (run.task_variant: the task keys off their defaults, e.g.
# "reward_levels=5", and a language-model task's reference and reward models): identifying too, but read off the
# settings as a whole, not one config key. None for the task's defaults, and on lines written before the column
# (read as one default variant).
TASK_VARIANT = "task_variant"

# The metric columns every successful line has (each with `<metric>_se`), and their type.
METRIC_COLUMNS = {"reward": float, "kl": float, "win_rate": float}
# Columns of every line besides the identifying ones: status ok | failed, run_dir, wall_s.
STATUS_OK, STATUS_FAILED = "ok", "failed"
# Inference-time best-of-N′ of the evaluated policy (eval.inference_n): per N′ the column `inference_<metric>_<N′>`
# for each metric here, with `<column>_se` and, on a task with an exact oracle, `exact_<column>`
# (vbon_exp/evaluation/inference_bon.py).
INFERENCE_METRICS = ("reward", "win_rate", "win_rate_vs_ref", "worst_reward")
_INFERENCE_COLUMN = re.compile(r"^inference_(" + "|".join(INFERENCE_METRICS) + r")_(\d+)$")


def inference_column(metric: str, n: int) -> str:
    """The results column of inference-time metric `metric` (one of INFERENCE_METRICS) at N′ = `n`."""
    return f"inference_{metric}_{int(n)}"


def parse_inference_column(column: str) -> tuple[str, int] | None:
    """(metric, N′) of an `inference_<metric>_<N′>` column (not its `_se` or `exact_` twin), else None."""
    match = _INFERENCE_COLUMN.match(str(column))
    return (match.group(1), int(match.group(2))) if match else None


def jsonable(value: Any) -> Any:
    """A value as JSON takes it: NaN as null, ±inf as ±1e308, tensors and numpy scalars as numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return jsonable(value.item())
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def append_line(path: Path, record: dict) -> None:
    """Append one whole JSON line: a single write on an O_APPEND descriptor, fsynced, so a crash never leaves half a
    line and concurrent writers never interleave within a line. The one writer of results and training logs."""
    line = (json.dumps(jsonable(record), sort_keys=True) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_result(run_dir: Path, line: dict) -> Path:
    """Append a results line to `<run_dir>/results.jsonl`; returns the file."""
    path = Path(run_dir) / RESULTS_FILE
    append_line(path, line)
    return path


def failed_line(ids: dict, err: BaseException, wall_s: float, run_dir: Path | None) -> dict:
    """The results line of a sweep member that failed: its identifying columns, status failed and the error."""
    return {**ids, "status": STATUS_FAILED, "error": str(err) or repr(err), "error_type": type(err).__name__,
            "wall_s": wall_s, "run_dir": str(run_dir) if run_dir else None}


def read_lines(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, one per line (an unreadable line is skipped with a warning). The one
    reader of results.jsonl and train_log.jsonl."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            log.warning("skipping unreadable line %s:%d (%s)", path, number, err)
            continue
        if isinstance(record, dict):
            rows.append(record)
    return rows


def finished_lines(run_dir: Path, ids: dict) -> list[dict]:
    """The `ok` results lines already in `<run_dir>/results.jsonl` of a run with these identifying columns (any
    evaluation temperature): a sweep re-run into the same directory skips such a member. A failed line, or a run
    of other settings in the same directory, does not count."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return []
    same = [k for k in ids if (k in ID_COLUMNS or k == TASK_VARIANT) and k != "eval_temperature"]
    return [line for line in read_lines(path)
            if line.get("status") == STATUS_OK and all(jsonable(line.get(k)) == jsonable(ids[k]) for k in same)]


def natural_key(text) -> tuple:
    """Sort key that puts member 2 before member 10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text)))


def find_files(root: Path, name: str = RESULTS_FILE) -> list[Path]:
    """Every file called `name` below `root` (a run dir, a sweep dir, any tree of runs), in natural order."""
    return sorted((p for p in Path(root).rglob(name) if p.is_file()), key=natural_key)


def read_results(root: Path) -> list[dict]:
    """Every results line below `root`, each with `results_file` (relative to root) and `line` (its number)."""
    root = Path(root)
    rows = []
    for path in find_files(root):
        for number, record in enumerate(read_lines(path), start=1):
            rows.append({**record, "results_file": str(path.relative_to(root)), "line": number})
    return rows


def write_exact_frontier(run_dir: Path, eval_temperature: float, curves: dict, spec: dict) -> Path:
    """Add to `<run_dir>/exact_frontier.json` the exact curves of the run's task at one evaluation temperature
    (oracle.frontier_curves()) and what determines them (`spec`: the task node, π_ref's temperature), for the
    analysis to draw: a list of {"eval_temperature", "spec", "curves"}, one per temperature."""
    from vbon_exp.storage import atomic_write_text

    path = Path(run_dir) / EXACT_FRONTIER_FILE
    entries = [e for e in read_exact_frontiers(run_dir) if e["eval_temperature"] != eval_temperature]
    entries.append({"eval_temperature": eval_temperature, "spec": spec, "curves": curves})
    atomic_write_text(path, json.dumps(jsonable(entries), sort_keys=True))
    return path


def read_exact_frontiers(run_dir: Path) -> list[dict]:
    """The entries written by `write_exact_frontier` (none where the run's task has no oracle)."""
    path = Path(run_dir) / EXACT_FRONTIER_FILE
    return json.loads(path.read_text()) if path.is_file() else []
