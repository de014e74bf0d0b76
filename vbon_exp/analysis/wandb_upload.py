"""The figures and tables of `make pareto-plot` logged to a wandb run of their own (job type `pareto`: the wandb
reader, analysis/load.py, skips such runs), online or offline as `--wandb-mode` says."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

JOB_TYPE = "pareto"


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


def _frontier_fractions(frequency: pd.DataFrame) -> dict:
    """The run summary's `frontier_fraction/[<set>/]<objective>`: each method's mean fraction on the frontier."""
    one_set = frequency["set"].nunique() == 1
    return {f"frontier_fraction/{'' if one_set else row.set + '/'}{row.objective}": row.on_frontier_mean
            for row in frequency.itertuples() if np.isfinite(row.on_frontier_mean)}


def log_to_wandb(out_dir: Path, figures: dict[str, Path], tables: dict[str, pd.DataFrame], *, mode: str,
                 project: str, entity: str | None, name: str, source: str) -> str | None:
    """The plots (wandb.Image) and tables (wandb.Table) in a wandb run of their own, job type `pareto`; returns
    where it went (the offline run dir, or the run's URL)."""
    import wandb

    run = wandb.init(project=project, entity=entity, name=name, job_type=JOB_TYPE, dir=str(out_dir), mode=mode,
                     config={"source": source}, reinit="finish_previous",
                     settings=wandb.Settings(silent=True, console="off"))
    try:
        run.log({**{key: wandb.Image(str(path)) for key, path in figures.items()},
                 **{key: wandb.Table(dataframe=_table_frame(frame)) for key, frame in tables.items()}})
        frequency = tables.get("frontier_frequency")
        if frequency is not None:
            run.summary.update(_frontier_fractions(frequency))
        where = str(Path(run.dir).parent) if mode == "offline" else getattr(run, "url", None)
    finally:
        run.finish()
    return where
