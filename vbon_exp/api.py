"""The Python API, for notebooks and scripts: the same code `python -m vbon_exp` and `make pareto-plot` run.

    from vbon_exp import api

    point = api.run_config("objective=vbon", "objective.beta=0.1")    # one run: its (first) results line
    points = api.load_results("outputs/multirun/2026-12-06/12-00-00")  # every results line of a sweep, normalised
    tables = api.frontier_tables(points)                               # frontiers, frequency, regret, the BoN gap
    gap = api.bon_gap(points)                                          # BoN's reward at each point's KL
    samples = api.load_samples(points["run_dir"].dropna().unique())    # what the policies said

`compose` gives the config a command line would compose (Hydra overrides, `+experiment=<preset>` included);
`run_config` runs it in `<output_root>/runs/<date>/<time>/` (or `run_dir`), writing what a command-line run writes —
results.jsonl, samples.parquet, train_log.jsonl, the resolved config in .hydra/config.yaml — and returns the results
line. The analysis functions read those files only (vbon_exp/analysis/)."""

from __future__ import annotations

import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vbon_exp.analysis import bon_gap, frontier_tables, load_results, load_samples
from vbon_exp.launch import CONF_DIR

__all__ = ["bon_gap", "compose", "frontier_tables", "load_results", "load_samples", "run_config"]


def compose(*overrides: str) -> DictConfig:
    """The config of `python -m vbon_exp *overrides` (conf/config.yaml with Hydra's overrides applied)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import vbon_exp.config  # noqa: F401  (the schemas and the N ↔ β resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def run_config(*overrides: str, run_dir: str | Path | None = None) -> dict:
    """Run `python -m vbon_exp *overrides` in this process and return its results line (the first: one per
    evaluation temperature, and per N for BoN from the pool, are in `<run_dir>/results.jsonl`). Bad input raises
    vbon_exp.errors.ConfigError naming the key, before anything is built."""
    from vbon_exp.run import run

    cfg = compose(*overrides)
    if run_dir is None:
        now = datetime.datetime.now()
        run_dir = Path(cfg.paths.output_root) / "runs" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    run_dir = Path(run_dir)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run(cfg, run_dir=run_dir)
