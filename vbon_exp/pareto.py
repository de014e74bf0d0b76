"""The reward–KL Pareto frontier of a sweep (`make pareto-plot`, `scripts/pareto_plot.py`).

Reads every `results.jsonl` under a runs directory (a Hydra multirun dir, or any tree of runs) into one table,
or the summaries of a wandb project's runs, and writes to `<RUNS>/pareto/` (or `--out`):

  points.csv               one row per results line (failed members too, with their error), `on_frontier`
  frontier.csv             the points on the frontier, by task and KL
  frontier_frequency.csv   per objective: successful points, points on the frontier, fraction (also printed)
  reward_vs_kl.{png,pdf}   reward vs KL per objective, the frontier drawn, BoN's analytic-KL points marked
  win_rate_vs_kl.{png,pdf} win rate vs KL
  vs_temperature.{png,pdf} reward and win rate vs evaluation temperature (only when the runs span > 1 temperature)
  judge_<name>_{reward,win_rate}_vs_kl.{png,pdf}  per evaluation judge (eval.judges): its reward, its win rate vs KL

The frontier is global over objectives, one per task: maximise reward, minimise KL; a point is on it iff no other
point has reward ≥ and KL ≤ with one of the two strict (equal points do not dominate each other). Failed members
and points without a finite reward and KL are listed but neither plotted nor on the frontier.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from vbon_exp.tracking import ID_COLUMNS

log = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"
# One marker per objective, in the order of their names; colours from matplotlib's tab10. Legend names come from the
# results lines (`objective_label`, each objective's declared label), so no list here names the objectives.
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "p")
# Leading columns of points.csv / frontier.csv; the rest follow alphabetically.
LEAD_COLUMNS = (
    "task", "objective", "algo", "bound", "beta", "n", "temperature", "eval_temperature", "m", "seed", "status",
    "on_frontier", "reward", "reward_se", "kl", "kl_se", "kl_estimator", "kl_analytic", "win_rate", "win_rate_se",
    "error_type", "error",
)
NUMERIC_COLUMNS = ("beta", "n", "temperature", "eval_temperature", "m", "seed", "reward", "reward_se", "kl",
                   "kl_se", "kl_analytic", "win_rate", "win_rate_se")
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
    for column in ("task", "objective", "status"):
        if column not in points:
            points[column] = None
    points["status"] = points["status"].fillna("ok")
    points["task"] = points["task"].fillna("?")
    points["objective"] = points["objective"].fillna("?")
    for column in NUMERIC_COLUMNS:
        points[column] = pd.to_numeric(points[column], errors="coerce") if column in points else np.nan
    # lines written before eval.temperatures existed were evaluated at the sampling temperature
    points["eval_temperature"] = points["eval_temperature"].fillna(points["temperature"])
    for column in judge_columns(points):
        points[column] = pd.to_numeric(points[column], errors="coerce")
    return points.reset_index(drop=True)


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


def add_frontier(points: pd.DataFrame) -> pd.DataFrame:
    """`on_frontier`: the point is on its task's global (all objectives) reward–KL frontier."""
    points = points.copy()
    points["on_frontier"] = False
    ok = plottable(points)
    for _, group in points[ok].groupby("task", sort=False):
        points.loc[group.index, "on_frontier"] = pareto_mask(group["reward"], group["kl"])
    return points


def objective_sort_key(name: str) -> tuple:
    return (str(name),)


def objective_styles(points: pd.DataFrame) -> dict:
    """objective -> (colour, marker, legend label), the same in every panel and figure of one table."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    labels = {}
    if "objective_label" in points:
        for objective, label in points[["objective", "objective_label"]].dropna().itertuples(index=False):
            labels.setdefault(objective, label)
    return {objective: (colours[i % len(colours)], MARKERS[i % len(MARKERS)], labels.get(objective, objective))
            for i, objective in enumerate(sorted(points["objective"].unique(), key=objective_sort_key))}


def frontier_frequency(points: pd.DataFrame) -> pd.DataFrame:
    """Per objective: successful points, those on the global frontier, and the fraction (the paper's claim is
    that vBoN's points are on it more often than the other objectives')."""
    ok = points[plottable(points)]
    rows = []
    for objective in sorted(points["objective"].unique(), key=objective_sort_key):
        mine = ok[ok["objective"] == objective]
        on = int(mine["on_frontier"].sum())
        rows.append({"objective": objective, "points": len(mine), "on_frontier": on,
                     "fraction": on / len(mine) if len(mine) else float("nan"),
                     "failed": int(((points["objective"] == objective) & (points["status"] != "ok")).sum())})
    return pd.DataFrame(rows, columns=["objective", "points", "on_frontier", "fraction", "failed"])


def ordered(points: pd.DataFrame) -> pd.DataFrame:
    """Leading columns first; rows by task, objective (the paper's order), N, temperature, seed, then source."""
    keys = pd.DataFrame({
        "task": points["task"].astype(str),
        "objective": points["objective"].map(objective_sort_key),
        "n": points["n"].fillna(np.inf),
        "temperature": points["temperature"].fillna(np.inf),
        "seed": points["seed"].fillna(np.inf),
        "source": points["results_file"].map(_natural) if "results_file" in points else 0,
        "line": points["line"] if "line" in points else 0,
    }, index=points.index)
    points = points.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)
    lead = [c for c in LEAD_COLUMNS if c in points]
    tail = sorted(c for c in points if c not in lead and c not in ("run_dir", "results_file", "line"))
    last = [c for c in ("run_dir", "results_file", "line") if c in points]
    return points[lead + tail + last]


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
        x, y, xerr=xerr, yerr=yerr, fmt=marker, color=colour, ecolor=colour, elinewidth=0.8, capsize=0,
        markersize=7, markerfacecolor=colour if filled else "none", markeredgecolor=colour, markeredgewidth=1.2,
        alpha=0.9, label=label, zorder=zorder,
    )


def _se(frame: pd.DataFrame, column: str):
    return frame[column].to_numpy(dtype=float) if column in frame and frame[column].notna().any() else None


def _task_axes(plt, tasks: list[str], title: str):
    fig, axes = plt.subplots(1, len(tasks), figsize=(7.0 * len(tasks), 5.2), squeeze=False)
    fig.suptitle(title, fontsize=13)
    return fig, list(axes[0])


def plot_vs_kl(points: pd.DataFrame, metric: str, ylabel: str, *, title: str, frontier: bool):
    """`metric` vs KL, one colour/marker per objective, one panel per task; with `frontier`, the reward–KL
    frontier drawn as a dashed line through its points (which are ringed); BoN's analytic-KL points hollow."""
    plt = _pyplot()
    ok = points[plottable(points) & np.isfinite(points[metric])] if metric in points else points.iloc[:0]
    tasks = sorted(ok["task"].unique()) or ["?"]
    styles = objective_styles(points)
    fig, axes = _task_axes(plt, tasks, title)
    for ax, task in zip(axes, tasks):
        mine = ok[ok["task"] == task]
        for objective in _objectives(mine):
            colour, marker, label = styles[objective]
            rows = mine[mine["objective"] == objective].sort_values("kl")
            _errorbar(ax, rows["kl"], rows[metric], _se(rows, "kl_se"), _se(rows, f"{metric}_se"),
                      colour=colour, marker=marker, label=f"{label} ({len(rows)} runs)")
            if "kl_analytic" in rows and rows["kl_analytic"].notna().any():
                analytic = rows[rows["kl_analytic"].notna()]
                _errorbar(ax, analytic["kl_analytic"], analytic[metric], None, None, colour=colour, marker=marker,
                          label=f"{label}, analytic KL log N − (N−1)/N", filled=False, zorder=2)
        if frontier and "on_frontier" in mine:
            front = mine[mine["on_frontier"]].sort_values(["kl", metric])
            if len(front):
                ax.plot(front["kl"], front[metric], "--", color="0.35", linewidth=1.2, zorder=1,
                        label=f"Pareto frontier ({len(front)} points)")
                ax.scatter(front["kl"], front[metric], s=170, facecolors="none", edgecolors="0.2", linewidths=1.0,
                           zorder=4)
        ax.set_title(f"task: {task}", fontsize=11)
        ax.set_xlabel("KL(π ‖ π_ref)  [nats]", fontsize=12)
        ax.set_ylabel(ylabel, fontsize=12)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
        if len(mine):
            ax.legend(fontsize=9, loc="lower right", framealpha=0.9)
        else:
            ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def _series_label(label: str, n: float, many: bool) -> str:
    return f"{label}, N = {n:.3g}" if many and np.isfinite(n) else label


def plot_vs_temperature(points: pd.DataFrame):
    """Reward and win rate vs evaluation temperature (`eval_temperature`: the sampling temperature unless the runs
    set eval.temperatures): one line per (objective, N), and per sampling temperature where policies were evaluated
    at other temperatures than they sampled at in training (the paper's TL;DR figure: one line per trained policy);
    the mean over seeds (error bars: the standard error over seeds, or the run's own when there is one seed)."""
    plt = _pyplot()
    ok = points[plottable(points) & np.isfinite(points["eval_temperature"])]
    trained_at = ok["temperature"].round(6) if bool((ok["eval_temperature"] != ok["temperature"]).any()) else None
    metrics = [(m, label) for m, label in (("reward", "reward"), ("win_rate", "win rate against π_ref samples"))
               if m in ok]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5.0), squeeze=False)
    styles = objective_styles(points)
    tasks = sorted(ok["task"].unique())
    fig.suptitle("vs evaluation temperature" + (f" (task: {', '.join(tasks)})" if tasks else ""), fontsize=13)
    for ax, (metric, ylabel) in zip(axes[0], metrics):
        for objective in _objectives(ok):
            colour, marker, label = styles[objective]
            rows = ok[(ok["objective"] == objective) & np.isfinite(ok[metric])]
            ns = sorted(rows["n"].round(6).dropna().unique())
            dashes = ["-", "--", ":", "-."]
            keys = [rows["n"].round(6)] + ([] if trained_at is None else [trained_at.loc[rows.index]])
            for k, (key, series) in enumerate(rows.groupby(keys, dropna=False)):
                n = key[0] if isinstance(key, tuple) else key
                stats = series.groupby("eval_temperature")[metric].agg(["mean", "std", "count"]).reset_index()
                own = (series.groupby("eval_temperature")[f"{metric}_se"].mean() if f"{metric}_se" in series
                       else None)
                err = np.where(stats["count"] > 1, stats["std"] / np.sqrt(stats["count"]),
                               own.reindex(stats["eval_temperature"]).to_numpy() if own is not None else np.nan)
                ax.errorbar(stats["eval_temperature"], stats["mean"], yerr=err,
                            fmt=marker + dashes[k % len(dashes)], color=colour, markersize=6, capsize=2,
                            linewidth=1.3, label=_series_label(label, n, len(ns) > 1) + (
                                "" if trained_at is None else f", trained at T = {key[1]:.3g}") + (
                                "" if len(tasks) < 2 else f" [{', '.join(sorted(series['task'].unique()))}]"))
        ax.set_xlabel("evaluation temperature", fontsize=12)
        ax.set_ylabel(ylabel, fontsize=12)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
        ax.legend(fontsize=9, framealpha=0.9)
    fig.tight_layout()
    return fig


def judge_figures(points: pd.DataFrame) -> dict:
    """Per evaluation judge (eval.judges) in the results: its reward (`judge_<name>_reward_vs_kl`) and its win rate
    against π_ref samples it scored (`judge_<name>_win_rate_vs_kl`) vs KL, one panel per task (the frontier is the
    training reward's, so it is not drawn)."""
    names = sorted({column.split("/")[1] for column in judge_columns(points)})
    figures = {}
    for name in names:
        for metric, ylabel in (("reward", "reward"), ("win_rate", "win rate against π_ref samples")):
            column = f"judge/{name}/{metric}"
            if column in points and np.isfinite(points[column]).any():
                figures[f"judge_{name}_{metric}_vs_kl"] = plot_vs_kl(
                    points, column, f"{ylabel} (judge: {name})", title=f"{ylabel} vs KL, judged by {name}",
                    frontier=False)
    return figures


def save_figure(fig, out_dir: Path, stem: str) -> Path:
    png = out_dir / f"{stem}.png"
    fig.savefig(png, dpi=150)
    fig.savefig(out_dir / f"{stem}.pdf")
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
            run.summary.update({f"frontier_fraction/{row.objective}": row.fraction
                                for row in frequency.itertuples() if np.isfinite(row.fraction)})
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


def format_frequency(frequency: pd.DataFrame) -> str:
    shown = frequency.copy()
    shown["fraction"] = shown["fraction"].map(lambda f: "-" if not np.isfinite(f) else f"{f:.2f}")
    return shown.to_string(index=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pareto_plot.py",
        description="The reward–KL Pareto frontier of a sweep: reads every results.jsonl under RUNS (or a wandb "
                    "project's runs), writes points.csv, frontier.csv, frontier_frequency.csv and the plots (PNG + "
                    "PDF) to RUNS/pareto/.")
    parser.add_argument("runs", nargs="?", default=None,
                        help="runs dir to read (searched recursively for results.jsonl); default: the newest "
                             "<output-root>/multirun/<date>/<time>")
    parser.add_argument("--out", default=None, help="output dir (default: RUNS/pareto, or "
                                                    "<output-root>/pareto/<project> with --wandb-project)")
    parser.add_argument("--output-root", default="outputs", help="where sweeps are found (default: outputs)")
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


def _main(args) -> int:
    from vbon_exp.tracking import resolve_wandb_mode

    try:
        mode = resolve_wandb_mode(args.wandb_mode)
    except ValueError as err:  # a bad $WANDB_MODE
        raise ParetoError(str(err)) from None
    if args.wandb_project:
        if args.runs:
            raise ParetoError("give either a runs dir or --wandb-project, not both")
        points = load_wandb_points(args.wandb_project, args.wandb_entity)
        source = f"wandb:{args.wandb_project}"
        out_dir = Path(args.out or Path(args.output_root) / "pareto" / args.wandb_project.replace("/", "_"))
    else:
        runs = Path(args.runs) if args.runs else newest_sweep(Path(args.output_root))
        points = load_points(runs)
        source = str(runs)
        out_dir = Path(args.out or runs / "pareto")
    out_dir.mkdir(parents=True, exist_ok=True)

    points = ordered(add_frontier(points))
    frontier = points[points["on_frontier"]].sort_values(["task", "kl", "reward"])
    frequency = frontier_frequency(points)
    points.to_csv(out_dir / "points.csv", index=False)
    frontier.to_csv(out_dir / "frontier.csv", index=False)
    frequency.to_csv(out_dir / "frontier_frequency.csv", index=False)

    n_ok = int(plottable(points).sum())
    failed = points[points["status"] != "ok"]
    print(f"pareto: {len(points)} results lines from {source}: {n_ok} plotted, {len(failed)} failed")
    for _, row in failed.iterrows():
        print(f"  failed: {row['objective']} beta={row['beta']} n={row['n']} seed={row['seed']}: "
              f"{_text(row.get('error_type'))}: {_text(row.get('error'))}")
    print("\nfrontier frequency (points of each objective on the global reward–KL Pareto frontier):")
    print(format_frequency(frequency))
    if n_ok == 0:
        raise ParetoError(f"none of the {len(points)} results lines from {source} is a successful run with a "
                          f"reward and a KL: nothing to plot (see {out_dir / 'points.csv'})")

    figures = {
        "reward_vs_kl": save_figure(plot_vs_kl(
            points, "reward", "reward", title="reward vs KL (dashed: the Pareto frontier over all objectives)",
            frontier=True), out_dir, "reward_vs_kl"),
        "win_rate_vs_kl": save_figure(plot_vs_kl(
            points, "win_rate", "win rate against π_ref samples", title="win rate vs KL", frontier=False),
            out_dir, "win_rate_vs_kl"),
    }
    if points.loc[plottable(points), "eval_temperature"].nunique() > 1:
        figures["vs_temperature"] = save_figure(plot_vs_temperature(points), out_dir, "vs_temperature")
    figures.update({stem: save_figure(fig, out_dir, stem) for stem, fig in judge_figures(points).items()})

    print(f"\nwritten to {out_dir}/: points.csv, frontier.csv, frontier_frequency.csv, "
          + ", ".join(f"{stem}.png/.pdf" for stem in figures))
    if mode != "disabled":
        entity, _, project = (args.wandb_project or "").rpartition("/")
        try:
            where = log_to_wandb(
                out_dir, figures, {"points": points, "frontier": frontier, "frontier_frequency": frequency},
                mode=mode, project=args.log_project or project or "vbon_exp", entity=args.wandb_entity or entity,
                name=f"pareto-{project or Path(source).name}", source=source)
        except Exception as err:  # the local files are written; say why wandb did not take them
            print(f"pareto_plot: error: logging to wandb ({mode}) failed: {type(err).__name__}: {err} (the files in "
                  f"{out_dir} are written; --wandb-mode offline or disabled avoids the server)", file=sys.stderr)
            return 1
        print(f"wandb ({mode}): {where}")
    return 0
