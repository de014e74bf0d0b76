"""Every method under inference-time best-of-N′ (runs with `eval.inference_n`; the estimators:
vbon_exp/evaluation/inference_bon.py): a policy deployed behind BoN is judged by BoN_N′(π), not by π (InfAlign,
Balashankar et al. 2024, arXiv:2412.19792). What `make pareto-plot` adds where the results carry the columns:

  inference_time.csv                 per configuration and N′ (seeds averaged, 95% intervals): the reward of
                                     BoN_N′(π), its win rate against BoN_N′(π_ref) (ties ½) and against one π_ref
                                     sample, the worst-of-N′ reward; the exact values on exact tasks
  inference_win_rate.csv             the inference-time win-rate table: one row per configuration, its win rate
                                     against BoN_N′(π_ref) at each N′ (also printed, in report.txt)
  inference_reward_vs_n.{png,pdf}    reward of BoN_N′(π) vs N′: a panel per method (and comparable set), a line
                                     per configuration, the exact values hollow on exact tasks
  inference_win_rate_vs_n.{png,pdf}  the win rate against BoN_N′(π_ref) vs N′ (½: π_ref itself behind BoN)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from vbon_exp.analysis.drawing import finish_panel, grid, make_room_for_legends, objective_styles, pyplot, save_figure
from vbon_exp.analysis.sets import SEED, config_columns, plottable, seed_mean_row
from vbon_exp.results import INFERENCE_METRICS, natural_key, parse_inference_column

# each estimate's long-table column (the N′ dropped from its results column) and its exact twin
METRIC_COLUMNS = tuple(f"inference_{metric}" for metric in INFERENCE_METRICS)
EXACT_COLUMNS = tuple(f"exact_{column}" for column in METRIC_COLUMNS)
KEYS = ("set", "objective", "objective_label", "beta", "n", "seeds")
FIGURES = (  # (stem, metric, y label, title, the line drawn across: what π_ref behind BoN scores, or None)
    ("inference_reward_vs_n", "inference_reward", "reward of BoN_N′(π)",
     "inference time: reward of the best of N′ samples of each policy vs N′", None),
    ("inference_win_rate_vs_n", "inference_win_rate", "win rate of BoN_N′(π) against BoN_N′(π_ref)",
     "inference time: win rate against π_ref behind the same BoN_N′ vs N′ (ties ½)", 0.5),
)


def inference_columns(points: pd.DataFrame) -> dict[tuple[str, int], str]:
    """{(metric, N′): results column} of the inference-time columns present."""
    return {parsed: column for column in points if (parsed := parse_inference_column(column)) is not None}


def _numeric(group: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(group[column], errors="coerce") if column in group else pd.Series(np.nan, index=group.index)


def _at(group: pd.DataFrame, n: int) -> pd.DataFrame:
    """A configuration's rows with the N′ columns renamed to the long table's (inference_reward, its _se, exact_)."""
    columns = {}
    for metric, column in zip(INFERENCE_METRICS, METRIC_COLUMNS):
        results = f"inference_{metric}_{n}"
        columns.update({column: _numeric(group, results), f"{column}_se": _numeric(group, f"{results}_se"),
                        f"exact_{column}": _numeric(group, f"exact_{results}")})
    return pd.DataFrame(columns, index=group.index)


def inference_time(points: pd.DataFrame) -> pd.DataFrame:
    """inference_time.csv: one row per configuration (its seeds averaged) and N′ where it has the columns, each
    metric's seed mean with its 95% interval (`mean_interval`: over seeds, or the run's own SE for one seed); empty
    without inference-time columns. `points` labelled with their comparable `set` (frontier_tables' points)."""
    found = inference_columns(points)
    if not found:
        return pd.DataFrame()
    ns = sorted({n for _, n in found})
    ok = points[plottable(points)]
    keys = config_columns(ok)
    rows = []
    for key, group in ok.groupby(keys, dropna=False, sort=False):
        base = {**dict(zip(keys, key)), "seeds": group[SEED].nunique(dropna=False), "runs": len(group)}
        if "objective_label" in group and group["objective_label"].notna().any():
            base["objective_label"] = group["objective_label"].dropna().iloc[0]
        for n in ns:
            row = seed_mean_row(_at(group, n), [*METRIC_COLUMNS, *EXACT_COLUMNS])
            if any(np.isfinite(row.get(column, math.nan)) for column in METRIC_COLUMNS):
                rows.append({**base, "inference_n": n, **row})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    order = table["set"].map(natural_key).to_frame("set").assign(
        objective=table["objective"].astype(str), n=table["n"].fillna(np.inf), beta=table["beta"].fillna(np.inf),
        inference_n=table["inference_n"])
    table = table.loc[order.sort_values(list(order.columns), kind="stable").index].reset_index(drop=True)
    lead = [c for c in (*KEYS, "inference_n") if c in table]
    return table[lead + [c for c in table if c not in lead]]


def win_rate_table(long: pd.DataFrame) -> pd.DataFrame:
    """inference_win_rate.csv: one row per configuration, per N′ its win rate against BoN_N′(π_ref)
    (`win_rate_<N′>` with `_ci_low`, `_ci_high`, and `exact_win_rate_<N′>` on exact tasks)."""
    if not len(long):
        return pd.DataFrame()
    keys = [k for k in KEYS if k in long]
    rows: dict[tuple, dict] = {}
    for _, row in long.iterrows():  # keyed by the values' text: NaN (no β) equals itself there
        out = rows.setdefault(tuple(str(row[k]) for k in keys), {k: row[k] for k in keys})
        n = int(row["inference_n"])
        for suffix in ("", "_ci_low", "_ci_high"):
            out[f"win_rate_{n}{suffix}"] = row.get(f"inference_win_rate{suffix}", math.nan)
        if "exact_inference_win_rate" in row and np.isfinite(row["exact_inference_win_rate"]):
            out[f"exact_win_rate_{n}"] = row["exact_inference_win_rate"]
    return pd.DataFrame(list(rows.values()))


def inference_tables(points: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{"inference_time": the long table, "inference_win_rate": the win-rate table}, or {} where no results line
    has inference-time columns."""
    long = inference_time(points)
    return {"inference_time": long, "inference_win_rate": win_rate_table(long)} if len(long) else {}


def write_inference_tables(tables: dict, out_dir: Path) -> list[str]:
    """The CSVs of `inference_tables` into `out_dir`; the file names written (none without the columns)."""
    for name, table in tables.items():
        table.to_csv(Path(out_dir) / f"{name}.csv", index=False)
    return [f"{name}.csv" for name in tables]


# ---------------------------------------------------------------------------------------------------- the terminal


def _number(value) -> str:
    return f"{value:.3g}" if value is not None and np.isfinite(value) else "-"


def _cell(mean: float, low: float, high: float, exact: float) -> str:
    if not np.isfinite(mean):
        return "-"
    text = f"{mean:.3f}" + (f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) else "")
    return text + (f" (exact {exact:.3f})" if np.isfinite(exact) else "")


def format_inference(tables: dict) -> str:
    """The inference-time win-rate table for report.txt: per set, one row per configuration, one column per N′ (seed
    mean [95% interval], the exact value beside it on exact tasks); "" without the columns."""
    if not tables:
        return ""
    table = tables["inference_win_rate"]
    ns = sorted(int(n) for n in tables["inference_time"]["inference_n"].unique())
    blocks = []
    for set_label, mine in table.groupby("set", sort=False):
        shown = pd.DataFrame({"objective": mine["objective"], "beta": mine["beta"].map(_number),
                              "n": mine["n"].map(_number), "seeds": mine["seeds"]})
        for n in ns:
            shown[f"N′={n}"] = [_cell(*values) for values in mine.reindex(columns=[
                f"win_rate_{n}", f"win_rate_{n}_ci_low", f"win_rate_{n}_ci_high", f"exact_win_rate_{n}"]).values]
        blocks.append(f"[{set_label}]\n" + shown.to_string(index=False))
    return ("\ninference-time win rate (BoN_N′ of each policy against BoN_N′ of π_ref, ties ½; ½ = π_ref's own; "
            "mean over seeds [95% interval]):\n" + "\n".join(blocks) + "\n")


# ---------------------------------------------------------------------------------------------------- figures


def plot_vs_inference_n(long: pd.DataFrame, points: pd.DataFrame, metric: str, ylabel: str, title: str,
                        level: float | None = None):
    """`metric` vs N′ (log scale), one panel per (set, method), one line per configuration (β, N): seed means with
    their 95% intervals, the exact values hollow and dotted where the task has them; `level` drawn across."""
    plt = pyplot()
    styles = objective_styles(points)
    panels = list(long.groupby(["set", "objective"], sort=False))
    fig, axes = grid(plt, len(panels), title)
    for ax, ((set_label, objective), mine) in zip(axes, panels):
        _, marker, label = styles.get(objective, ("C0", "o", objective))
        if level is not None:
            ax.axhline(level, color="0.3", linewidth=1.0, linestyle="--", zorder=1, label="π_ref behind BoN_N′")
        for i, ((beta, n), config) in enumerate(mine.groupby(["beta", "n"], dropna=False, sort=False)):
            seeds = int(config["seeds"].max())
            _draw_configuration(ax, config.sort_values("inference_n"), metric, f"C{i % 10}", marker,
                                f"β = {_number(beta)}, N = {_number(n)}" + (f" ({seeds} seeds)" if seeds > 1 else ""))
        ax.set_xscale("log", base=2)
        ticks = sorted(int(n) for n in mine["inference_n"].unique())
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
        finish_panel(ax, f"{label} · {set_label}", "N′ (best of N′ samples at inference)", ylabel, mine.empty)
    make_room_for_legends(fig, axes)
    fig.tight_layout()
    return fig


def _draw_configuration(ax, config: pd.DataFrame, metric: str, colour, marker: str, label: str) -> None:
    x, y = config["inference_n"].to_numpy(dtype=float), config[metric].to_numpy(dtype=float)
    low = config.get(f"{metric}_ci_low", pd.Series(np.nan, index=config.index)).to_numpy(dtype=float)
    high = config.get(f"{metric}_ci_high", pd.Series(np.nan, index=config.index)).to_numpy(dtype=float)
    yerr = np.nan_to_num(np.vstack([y - low, high - y]), nan=0.0)
    ax.errorbar(x, y, yerr=yerr, fmt=marker + "-", color=colour, markersize=6, capsize=2, linewidth=1.3,
                label=label, zorder=3)
    exact = f"exact_{metric}"
    if exact in config and np.isfinite(config[exact]).any():
        ax.plot(x, config[exact].to_numpy(dtype=float), marker=marker, linestyle=":", color=colour,
                markerfacecolor="none", markersize=9, linewidth=1.0, label=f"{label}, exact", zorder=2)


def write_inference_figures(tables: dict, points: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """The figures of the module docstring into `out_dir` (PNG + PDF): {stem: PNG path}; none without the columns."""
    if not tables:
        return {}
    long = tables["inference_time"]
    return {stem: save_figure(plot_vs_inference_n(long, points, metric, ylabel, title, level), Path(out_dir), stem)
            for stem, metric, ylabel, title, level in FIGURES if metric in long and long[metric].notna().any()}
