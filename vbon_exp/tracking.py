"""Experiment tracking: wandb (online, offline or disabled) and the local results table.

Every run appends one line per evaluation temperature to `<run_dir>/results.jsonl` (its reward-vs-KL points),
whatever wandb's mode, so a sweep can be aggregated without any server; its training logs go to
`<run_dir>/train_log.jsonl` too (one line per logged step: the training curves, vbon_exp/curves.py). Secrets never
reach a log, a config or a results line."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from vbon_exp.errors import ConfigError

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")

# The identifying columns of a results line and the config key each comes from: the one definition that run.py
# writes, __main__ uses for failed sweep members and pareto reads back from wandb run configs. (`algo` is None for
# objectives that train without conf/algo. `eval_temperature` is the temperature a line's policy was evaluated at:
# the sampling temperature unless `eval.temperatures` lists others, then each line sets its own.)
ID_COLUMNS = {
    "task": "task.name", "objective": "objective.name", "algo": "algo.name", "bound": "objective.bound",
    "beta": "objective.beta", "n": "objective.n", "temperature": "sampling.temperature", "m": "reference.m",
    "test_m": "reference.test_m", "seed": "seed", "reward_output": "reward.output",
    "eval_temperature": "sampling.temperature",
}


@dataclass
class WandbConfig:
    """conf `wandb:` (Weights & Biases). The local results.jsonl is written whatever the mode."""

    # online | offline | disabled | null (auto: $WANDB_MODE, else online with an API key, else offline).
    mode: Optional[str] = None
    # wandb project name.
    project: str = "vbon_exp"
    # wandb entity (team or user); null = your default.
    entity: Optional[str] = None
    # Run group, e.g. a sweep's name.
    group: Optional[str] = None
    # Extra run tags (list of strings).
    tags: List[str] = field(default_factory=list)

    def check(self, prefix: str = "wandb") -> None:
        if self.mode not in (None, *WANDB_MODES):
            raise ConfigError(f"{prefix}.mode must be online, offline, disabled or null (auto), got {self.mode!r}")


def wandb_api_key_configured() -> bool:
    """True when wandb could authenticate: WANDB_API_KEY set, or a netrc entry for the wandb host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """Config `wandb.mode` (null = auto) → online | offline | disabled. Auto: WANDB_MODE if set, else online
    with an API key, else offline (no server needed)."""
    if mode is None:
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")
    if mode == "dryrun":
        mode = "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb.mode must be one of {WANDB_MODES} or null, got {mode!r}")
    return mode


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def append_jsonl(path: Path, record: dict) -> None:
    """Append one whole line: a single write on an O_APPEND descriptor, fsynced, so a crash never leaves half a
    line and concurrent writers never interleave within a line."""
    line = (json.dumps(_jsonable(record), sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class Tracker:
    """wandb run + local results file for one vbon_exp run."""

    def __init__(
        self,
        run_dir: Path,
        config: dict,
        *,
        mode: str | None,
        project: str,
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        job_type: str = "train",
        write_results: bool = True,
        results_id: dict | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.results_path = self.run_dir / "results.jsonl"
        self.train_log_path = self.run_dir / "train_log.jsonl"
        self.write_results = write_results  # false on non-main processes of a multi-process run
        self.mode = resolve_wandb_mode(mode)
        self.t0 = time.perf_counter()
        self.run = None
        self.wandb_dir: str | None = None
        if self.mode != "disabled":
            import wandb

            self.run = wandb.init(
                project=project, entity=entity, name=name, group=group, tags=list(tags or []), job_type=job_type,
                dir=str(self.run_dir), mode=self.mode,
                # the results line's identifying columns beside the config, for `make pareto-plot --wandb-project`
                config={**config, **({"results_id": results_id} if results_id else {})}, reinit="finish_previous",
                settings=wandb.Settings(silent=True, console="off"),
            )
            self.wandb_dir = str(Path(self.run.dir).parent)
            log.info("wandb %s run in %s", self.mode, self.wandb_dir)

    def log(self, metrics: dict, step: int | None = None) -> None:
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if self.write_results:
            append_jsonl(self.train_log_path, {"step": step, **numeric})
        if self.run is not None:
            self.run.log(numeric, step=step)

    def write_point(self, point: dict) -> None:
        """One reward-vs-KL point of the run: to results.jsonl (always) and wandb's summary and `final/*` history (a
        run with several evaluation temperatures writes several points; its wandb summary keeps the last)."""
        if self.write_results:
            append_jsonl(self.results_path, point)
        if self.run is not None:
            numeric = {k: v for k, v in point.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.run.summary.update(_jsonable(numeric))
            self.run.log({f"final/{k}": v for k, v in numeric.items()})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
