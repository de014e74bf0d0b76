"""`python -m vbon_exp [overrides]`: one run (or a sweep with -m) of the experiment in conf/config.yaml."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from vbon_exp import config as _config  # noqa: F401  (registers the schemas and the n_from_beta / beta_from_n resolvers)
from vbon_exp.errors import USER_ERRORS
from vbon_exp.launch import run_hydra
from vbon_exp.results import ID_COLUMNS, TASK_VARIANT, failed_line, write_result

log = logging.getLogger("vbon_exp")


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _failed_point(cfg: DictConfig, err: Exception, t_start: float) -> dict:
    """The results line of a sweep member that failed: its identifying columns, status failed and the error. Read
    off its settings when they validate (the failure came later), else off the composed config, key by key."""
    from vbon_exp.config import task_nodes, validate
    from vbon_exp.run import base_point, hydra_run_dir, task_variant

    try:
        point = base_point(validate(cfg))
    except Exception:  # the bad value is one of the identifying columns: read each alone, None where it fails
        point = {}
        for column, key in ID_COLUMNS.items():
            try:
                point[column] = OmegaConf.select(cfg, key)
            except Exception:
                point[column] = None
        try:  # the task variant too, so the failure is counted in its set (`make pareto-plot`)
            point[TASK_VARIANT] = task_variant(*task_nodes(cfg))
        except Exception:
            point[TASK_VARIANT] = None
    return failed_line(point, err, time.perf_counter() - t_start, hydra_run_dir())


def _record_failure(cfg: DictConfig, err: Exception, t_start: float) -> None:
    """Log a failed sweep member and append its results line, so the other members go on and the failure shows in
    the sweep's table (`make pareto-plot`)."""
    log.error("sweep member failed (%s: %s); the sweep goes on", type(err).__name__, err,
              exc_info=not isinstance(err, USER_ERRORS))
    point = _failed_point(cfg, err, t_start)
    if os.environ.get("RANK", "0") == "0" and point["run_dir"]:  # one line per member, from the main process
        path = write_result(Path(point["run_dir"]), point)
        log.error("recorded as failed in %s", path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    t_start = time.perf_counter()
    if cfg.get("plan"):  # what the run (or each member of its preset) will hold and take; nothing is loaded
        from vbon_exp.plan import plan_from_hydra

        try:
            print(plan_from_hydra(cfg))
        except USER_ERRORS as err:
            print(f"vbon_exp: error: {err}", file=sys.stderr)
            sys.exit(2)
        return None
    try:
        from vbon_exp.config import validate

        settings = validate(cfg)  # torch-free: a bad value is answered before the pipeline loads
        from vbon_exp.run import run  # the pipeline (torch, transformers)

        point = run(settings, skip_finished=_is_multirun())  # a re-run sweep skips its finished members
    except Exception as err:
        if _is_multirun():  # a sweep member: recorded as failed, the sweep goes on
            _record_failure(cfg, err, t_start)
            return None
        if isinstance(err, USER_ERRORS):
            print(f"vbon_exp: error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    return point.get("reward")  # the metric a sweeper optimises; None on non-main processes


def cli() -> None:
    """`python -m vbon_exp`: Hydra's main; a command line that does not fit the config exits with status 2."""
    run_hydra(main)


if __name__ == "__main__":
    cli()
