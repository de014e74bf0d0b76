"""Experiment tracking: wandb (online, offline or disabled) beside the local files of vbon_exp/results.py.

Every run appends its reward-vs-KL points to `<run_dir>/results.jsonl` whatever wandb's mode, so a sweep can be
aggregated without any server; its training logs go to `<run_dir>/train_log.jsonl` too (one line per logged step:
the training curves, vbon_exp/analysis/curves.py). Secrets never reach a log, a config or a results line."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from vbon_exp.results import RESULTS_FILE, TRAIN_LOG_FILE, append_line, jsonable, write_result
from vbon_exp.settings.wandb import WANDB_MODES, WandbConfig  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


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
        self.results_path = self.run_dir / RESULTS_FILE
        self.train_log_path = self.run_dir / TRAIN_LOG_FILE
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
            append_line(self.train_log_path, {"step": step, **numeric})
        if self.run is not None:
            self.run.log(numeric, step=step)

    def write_point(self, point: dict) -> None:
        """One reward-vs-KL point of the run: to results.jsonl (always) and wandb's summary and `final/*` history (a
        run with several evaluation temperatures writes several points; its wandb summary keeps the last)."""
        if self.write_results:
            write_result(self.run_dir, point)
        if self.run is not None:
            numeric = {k: v for k, v in point.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.run.summary.update(jsonable(numeric))
            self.run.log({f"final/{k}": v for k, v in numeric.items()})

    def log_table(self, name: str, frame) -> None:
        """A pandas DataFrame as the wandb Table `name` (a column of None only becomes NaN: one type per column)."""
        if self.run is None:
            return
        import wandb

        frame = frame.copy()
        for column in frame:
            if frame[column].dtype == object and frame[column].isna().all():
                frame[column] = frame[column].astype(float)
        self.run.log({name: wandb.Table(dataframe=frame)})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
