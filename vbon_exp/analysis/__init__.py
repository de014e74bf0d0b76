"""The analysis of a sweep: what `make pareto-plot` computes, draws and prints, and the same as a Python API.

It reads results files and what runs wrote next to them, nothing else of the pipeline: every run's
`results.jsonl` (one line per evaluation point), `train_log.jsonl` (the training curve), `samples.parquet` (the
evaluation's samples) and, on a task with an exact oracle, `exact_frontier.json` (the exact curves), all through
vbon_exp.results; or the summaries of a wandb project's runs. It imports vbon_exp.results, vbon_exp.tracking (for
the wandb mode only) and third-party packages, never the tasks, trainers, objectives or the run itself (an
import-linter contract in pyproject.toml says so): a sweep is analysed without building a model.

    load.py          results files and wandb runs → one normalised table; samples; AnalysisError
    sets.py          comparable sets, seeds → one point with a 95% t-interval
    frontier.py      the Pareto frontier (per seed, of the seed means), its frequency, exact regret and curves
    gap_to_bon.py    the gap to BoN (from the pool) at matched KL (the module of `bon_gap` below)
    tables.py        the tables in data-flow order, their CSVs and their terminal form
    inference_time.py   every method behind best-of-N′ (eval.inference_n): BoN_N′(π) vs N′, the win-rate table
    gold_exact.py    synthetic task: exact gold vs proxy reward against KL, HedgeTune's gold-optimal N / λ / μ
    gold_vs_proxy.py the judges as gold: how much of the proxy's gain each judge sees
    drawing.py, figures.py   the figures;  wandb_upload.py   their upload (job type `pareto`)
    cli.py           `python -m vbon_exp.analysis RUNS` = scripts/pareto_plot.py = `make pareto-plot`
    curves.py        `python -m vbon_exp.analysis.curves RUNS`: training curves and whether they flattened
    samples.py       `python -m vbon_exp.analysis.samples RUN_DIR ...`: the runs' responses side by side

In a notebook:

    from vbon_exp import analysis
    points = analysis.load_results("outputs/multirun/2026-11-24/13-49-50")
    out = analysis.frontier_tables(points, runs_dir="outputs/multirun/2026-11-24/13-49-50")
    out["frontier_frequency"], out["bon_gap"]
    samples = analysis.load_samples(["outputs/multirun/2026-11-24/13-49-50/0", ".../1"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from vbon_exp.analysis import gap_to_bon as _gap_to_bon
from vbon_exp.analysis import load as _load
from vbon_exp.analysis import sets as _sets
from vbon_exp.analysis import tables as _tables
from vbon_exp.analysis.load import AnalysisError

__all__ = ["AnalysisError", "bon_gap", "frontier_tables", "load_results", "load_samples"]


def load_results(runs_dir: str | Path) -> pd.DataFrame:
    """Every results line under `runs_dir` (a sweep dir, a run dir, any tree of runs), one row each, normalised
    as the CLI reads them: the columns of results.jsonl (task, objective, beta, n, seed, eval_temperature, reward,
    kl, win_rate, each `<metric>_se`, exact_* on the synthetic task, judge/<name>/* ...), numbers as floats, a
    missing `eval_temperature` filled with the sampling temperature, kl_rl with a reward transform Φ as its own
    objective `kl_rl[<Φ>]`, plus `results_file` (relative to runs_dir) and `line`. Failed sweep members are rows
    too (`status` "failed", `error`). Raises AnalysisError where there is nothing to read."""
    return _load.load_points(runs_dir)


def load_samples(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Every run's `samples.parquet` concatenated, one row per evaluation sample: prompt_index, prompt, sample,
    response, response_tokens, reward, judge/<name>, logp_policy, logp_ref, kl_term, kl_estimator,
    eval_temperature, seed, objective, bon_n, bon_kept; the run's identifying columns from its results.jsonl that
    the samples lack (beta, n, algo, m, objective_label, ...: those all its lines agree on); and `run_dir`. Dirs
    without the file are skipped with a warning; none with one raises AnalysisError."""
    return _load.load_samples(run_dirs)


def frontier_tables(points: pd.DataFrame, group_by: Sequence[str] | None = None,
                    runs_dir: str | Path | None = None) -> dict:
    """The tables of `make pareto-plot` from `load_results`' points, as DataFrames: points (with `set`,
    `on_frontier`, `on_frontier_without_bon`), seed_means (one row per configuration, 95% intervals), frontier,
    frontier_frequency, regret (exact tasks), bon_gap and bon_gap_points (the gap to BoN at matched KL), curves
    ({set: the exact curves}, read from the runs' exact_frontier.json: give `runs_dir` where the runs have moved
    since they ran) and notes (what could not be drawn or compared). `group_by`: the columns defining comparable
    sets (default all of task, eval_temperature, reward_output, m; those left out are pooled)."""
    return _tables.frontier_tables(points, group_by, Path(runs_dir) if runs_dir is not None else None)


def bon_gap(points: pd.DataFrame, per_seed: bool = False) -> pd.DataFrame:
    """The gap to BoN at matched KL (bon_gap.csv): for every point but BoN's own, BoN-from-the-pool's reward and
    win rate at the point's KL (BoN's own KL per pool size; N* between two neighbouring sizes from the shape
    log N − (N − 1)/N rescaled through them, values interpolated linearly in log N*; `beyond_pool` and NaN past the
    pool's largest N) minus the point's: `reward_gap`, `win_rate_gap` (> 0: BoN is ahead). One row per
    configuration, its seeds averaged with 95% intervals; `per_seed=True`: one row per point (bon_gap_points.csv,
    with `bon_curve`: "same seed" or "seed mean"). `points` as `load_results` gives them (comparable sets are
    labelled here unless a `set` column is there)."""
    if "set" not in points:
        points = _sets.label_sets(points, _sets.set_columns(points))
    gaps, _ = _gap_to_bon.gap_points(points)
    return gaps if per_seed else _gap_to_bon.gap_seed_means(gaps)
