"""Every figure of `make pareto-plot`, from the tables of analysis/tables.py:

  reward_vs_kl.{png,pdf}   reward vs KL per set: seed means with 95% intervals, single seeds faint, the frontier,
                           BoN's points marked as the targets of the objectives that distil π_BoN
  win_rate_vs_kl.{png,pdf} win rate vs KL
  exact_vs_kl.{png,pdf}    exact tasks: exact reward and exact win rate vs exact KL under the exact frontiers
  vs_temperature.{png,pdf} reward and win rate vs evaluation temperature (only when the runs span > 1 temperature)
  judge_<name>_{reward,win_rate}_vs_kl.{png,pdf}  per evaluation judge (eval.judges): its reward, its win rate vs KL
  bon_gap_vs_kl.{png,pdf}  BoN's reward and win rate at each point's KL minus the point's, vs KL (gap_to_bon.py)

The panels, markers, intervals and legends they share are in analysis/drawing.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vbon_exp.analysis.drawing import (
    draw_points,
    errorbar_interval,
    finish_panel,
    grid,
    make_room_for_legends,
    objective_styles,
    objectives,
    pyplot,
    save_figure,
)
from vbon_exp.analysis.load import judge_columns
from vbon_exp.analysis.sets import COMPARABLE, distils_bon, is_bon_target, plottable, sets_of

# ---------------------------------------------------------------------------------------------------- vs KL


def _same_set(a: pd.Series, b: pd.Series) -> bool:
    return all(c not in a or (pd.isna(a[c]) and pd.isna(b[c])) or a[c] == b[c] for c in ("set", *COMPARABLE))


def _draw_targets(ax, configs: pd.DataFrame, x: str, y: str, styles: dict) -> None:
    """BoN's points ringed as the targets, and a thin arrow from each point of an objective that aims at π_BoN
    (`distils_bon`: vBoN, BOND, BoNBoN, ...; β = 1/(N − 1)) to BoN's point at its N."""
    targets = configs[is_bon_target(configs) & configs[y].notna()]
    if targets.empty:
        return
    for objective, mine in targets.groupby("objective"):
        ax.scatter(mine[x], mine[y], s=330, marker="o", facecolors="none", edgecolors=styles[objective][0],
                   linewidths=1.0, linestyles="--", zorder=2,
                   label=f"{styles[objective][2]}: the π_BoN targets (arrows: from each point that distils π_BoN)")
    for _, row in configs[distils_bon(configs) & configs[y].notna()].iterrows():
        for _, target in targets[np.isclose(targets["n"], row["target_n"])].iterrows():
            if _same_set(row, target):
                ax.annotate("", xy=(target[x], target[y]), xytext=(row[x], row[y]), zorder=2.5,
                            arrowprops={"arrowstyle": "->", "color": styles[row["objective"]][0], "linewidth": 0.7,
                                        "alpha": 0.4, "shrinkA": 3, "shrinkB": 4})  # faint: the points come first


def _draw_frontier(ax, configs: pd.DataFrame, y: str) -> None:
    front = configs[configs["on_frontier"]].sort_values(["kl", y])
    if len(front):
        ax.plot(front["kl"], front[y], "--", color="0.35", linewidth=1.2, zorder=1,
                label=f"Pareto frontier of the seed means ({len(front)} points)")
        ax.scatter(front["kl"], front[y], s=170, facecolors="none", edgecolors="0.2", linewidths=1.0, zorder=4)


def plot_vs_kl(configs: pd.DataFrame, points: pd.DataFrame, metric: str, ylabel: str, *, title: str,
               frontier: bool):
    """`metric` vs KL, one panel per comparable set, one colour/marker per objective: seed means with 95%
    intervals over seeds, single seeds faint; with `frontier`, the set's frontier of the seed means dashed (its
    points ringed); BoN's points marked as the targets of the objectives that distil π_BoN."""
    plt = pyplot()
    styles = objective_styles(points)
    ok = points[plottable(points)]
    sets = sets_of(configs) or ["?"]
    fig, axes = grid(plt, len(sets), title)
    for ax, set_label in zip(axes, sets):
        mine = configs[(configs["set"] == set_label) & configs[metric].notna()] if metric in configs else configs[:0]
        draw_points(ax, mine, ok[ok["set"] == set_label], "kl", metric, styles, analytic=True)
        _draw_targets(ax, mine, "kl", metric, styles)
        if frontier:
            _draw_frontier(ax, mine, metric)
        finish_panel(ax, set_label, "KL(π ‖ π_ref)  [nats]", ylabel, mine.empty)
    make_room_for_legends(fig, axes)
    fig.tight_layout()
    return fig


def judge_figures(configs: pd.DataFrame, points: pd.DataFrame) -> dict:
    """Per evaluation judge (eval.judges) in the results: its reward (`judge_<name>_reward_vs_kl`) and its win rate
    against π_ref samples it scored (`judge_<name>_win_rate_vs_kl`) vs KL, one panel per set (the frontier is the
    training reward's, so it is not drawn)."""
    names = sorted({column.split("/")[1] for column in judge_columns(points)})
    figures = {}
    for name in names:
        for metric, ylabel in (("reward", "reward"), ("win_rate", "win rate against π_ref samples")):
            column = f"judge/{name}/{metric}"
            if column in configs and np.isfinite(configs[column]).any():
                figures[f"judge_{name}_{metric}_vs_kl"] = plot_vs_kl(
                    configs, points, column, f"{ylabel} (judge: {name})", title=f"{ylabel} vs KL, judged by {name}",
                    frontier=False)
    return figures


# ---------------------------------------------------------------------------------------------------- exact values

EXACT_PANELS = (  # (metric, the utility of its frontier curve, y label, the curve's legend)
    ("exact_reward", "reward", "exact reward", "exact frontier: π* ∝ π_ref·exp(r/β), one β for all prompts"),
    ("exact_win_rate", "win_rate", "exact win rate against π_ref",
     "exact frontier: π ∝ π_ref·exp(W/β), W = P(beat a π_ref sample)"),
)


def _draw_curves(ax, curves: dict, utility: str, label: str) -> None:
    optimum, bon_curve = curves.get(f"optimum_{utility}"), curves.get("bon")
    if optimum:
        ax.plot(optimum["kl"], optimum[utility], "-", color="black", linewidth=1.4, zorder=1, label=label)
    if bon_curve:
        ax.plot(bon_curve["kl"], bon_curve[utility], ":", color="0.45", linewidth=1.4, zorder=1,
                label="exact π_BoN over N (the targets' curve)")


def _zoom(ax, frame: pd.DataFrame, x: str, y: str, curves: dict, utility: str) -> None:
    """Axes on the points (the curves run on to the greedy policy's KL): x up to 1.15 × the largest point's."""
    top = float(np.nanmax(frame[f"{x}_ci_high"].fillna(frame[x]) if f"{x}_ci_high" in frame else frame[x]))
    right = 1.15 * top if top > 0 else 1.0
    ys = [frame[column].to_numpy(dtype=float) for column in (y, f"{y}_ci_low", f"{y}_ci_high") if column in frame]
    for curve in (curves.get(f"optimum_{utility}"), curves.get("bon")):
        if curve:
            kl, value = np.asarray(curve["kl"]), np.asarray(curve[utility])
            ys.append(value[kl <= right])
    ys = np.concatenate(ys)
    low, high = float(np.nanmin(ys)), float(np.nanmax(ys))
    pad = 0.06 * (high - low or 1.0)
    ax.set_xlim(-0.02 * right, right)
    ax.set_ylim(low - pad, high + pad)


def plot_exact(configs: pd.DataFrame, points: pd.DataFrame, curves: dict):
    """Exact reward and exact win rate vs exact KL, one row per set with exact values: the exact frontiers and the
    π_BoN curve (from the runs' exact_frontier.json), seed means with 95% intervals, single seeds faint, BoN's
    points as the targets."""
    plt = pyplot()
    styles = objective_styles(points)
    ok = points[plottable(points)]
    sets = sets_of(configs[configs["exact_kl"].notna()])
    fig, axes = grid(plt, 2 * len(sets), "exact values (the task's oracle) vs exact KL, under the exact frontiers",
                     columns=2)
    for row, set_label in enumerate(sets):
        mine = configs[(configs["set"] == set_label) & configs["exact_kl"].notna()]
        for ax, (metric, utility, ylabel, label) in zip(axes[2 * row:2 * row + 2], EXACT_PANELS):
            _draw_curves(ax, curves.get(set_label, {}), utility, label)
            draw_points(ax, mine, ok[ok["set"] == set_label], "exact_kl", metric, styles, analytic=False)
            _draw_targets(ax, mine, "exact_kl", metric, styles)
            _zoom(ax, mine, "exact_kl", metric, curves.get(set_label, {}), utility)
            finish_panel(ax, set_label, "exact KL(π ‖ π_ref)  [nats]", ylabel, mine.empty)
    make_room_for_legends(fig, axes)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------- temperature


def _series_label(label: str, n: float, many: bool) -> str:
    return f"{label}, N = {n:.3g}" if many and np.isfinite(n) else label


def plot_vs_temperature(configs: pd.DataFrame, points: pd.DataFrame):
    """Reward and win rate vs evaluation temperature (`eval_temperature`: the sampling temperature unless the runs
    set eval.temperatures): one line per (objective, N), and per sampling temperature where policies were evaluated
    at other temperatures than they sampled at in training (the paper's TL;DR figure: one line per trained policy);
    the seed means with their 95% intervals (of the run itself with one seed)."""
    plt = pyplot()
    ok = configs[np.isfinite(configs["eval_temperature"])]
    trained_at = ok["temperature"].round(6) if bool((ok["eval_temperature"] != ok["temperature"]).any()) else None
    metrics = [(m, label) for m, label in (("reward", "reward"), ("win_rate", "win rate against π_ref samples"))
               if m in ok]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5.0), squeeze=False)
    styles = objective_styles(points)
    tasks = sorted(ok["task"].unique())
    fig.suptitle("vs evaluation temperature" + (f" (task: {', '.join(tasks)})" if tasks else ""), fontsize=13)
    dashes = ["-", "--", ":", "-."]
    for ax, (metric, ylabel) in zip(axes[0], metrics):
        for objective in objectives(ok):
            colour, marker, label = styles[objective]
            rows = ok[(ok["objective"] == objective) & np.isfinite(ok[metric])]
            ns = sorted(rows["n"].round(6).dropna().unique())
            keys = [rows["n"].round(6)] + ([] if trained_at is None else [trained_at.loc[rows.index]])
            for k, (key, series) in enumerate(rows.groupby(keys, dropna=False)):
                key = key if isinstance(key, tuple) else (key,)
                series = series.sort_values("eval_temperature")
                ax.errorbar(series["eval_temperature"], series[metric], yerr=errorbar_interval(series, metric),
                            fmt=marker + dashes[k % len(dashes)], color=colour, markersize=6, capsize=2,
                            linewidth=1.3, label=_series_label(label, key[0], len(ns) > 1) + (
                                "" if trained_at is None else f", trained at T = {key[1]:.3g}") + (
                                "" if len(tasks) < 2 else f" [{', '.join(sorted(series['task'].unique()))}]"))
        ax.set_xlabel("evaluation temperature", fontsize=12)
        ax.set_ylabel(ylabel, fontsize=12)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
        ax.legend(fontsize=9, framealpha=0.9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------- the gap to BoN

GAP_PANELS = (("reward_gap", "BoN's reward − the point's, at its KL"),
              ("win_rate_gap", "BoN's win rate − the point's, at its KL"))


def plot_bon_gap(gap: pd.DataFrame, gap_points: pd.DataFrame, points: pd.DataFrame):
    """The gap to BoN at matched KL (bon_gap.csv) vs KL, one row per set: the reward gap and the win-rate gap of
    each method's seed means with their 95% intervals, single seeds faint, a zero line (BoN itself); points beyond
    BoN's pool are left out (no BoN value there)."""
    plt = pyplot()
    styles = objective_styles(points)
    sets = sets_of(gap)
    fig, axes = grid(plt, 2 * len(sets), "the gap to BoN at matched KL (> 0: BoN is ahead; BoN's KL: analytic)",
                     columns=2)
    for row, set_label in enumerate(sets):
        mine = gap[(gap["set"] == set_label) & ~gap["beyond_pool"]]
        singles = gap_points[(gap_points["set"] == set_label) & ~gap_points["beyond_pool"]]
        for ax, (metric, ylabel) in zip(axes[2 * row:2 * row + 2], GAP_PANELS):
            shown = mine[mine[metric].notna()]
            ax.axhline(0.0, color="0.3", linewidth=1.0, linestyle="--", zorder=1, label="BoN at the same KL")
            draw_points(ax, shown, singles, "kl", metric, styles, analytic=False)
            finish_panel(ax, set_label, "KL(π ‖ π_ref)  [nats]", ylabel, shown.empty,
                         empty_text="no point within the KL of BoN's pool")
    make_room_for_legends(fig, axes)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------- all of them


def write_figures(out: dict, out_dir: Path) -> dict[str, Path]:
    """Every figure the tables of `frontier_tables` call for, each saved as PNG + PDF in `out_dir` (and closed)
    as soon as it is drawn: {stem: PNG path}."""
    points, configs = out["points"], out["seed_means"]
    saved = {}

    def save(stem: str, fig) -> None:
        saved[stem] = save_figure(fig, out_dir, stem)

    save("reward_vs_kl", plot_vs_kl(configs, points, "reward", "reward", frontier=True,
                                    title="reward vs KL (dashed: the Pareto frontier of each comparable set)"))
    save("win_rate_vs_kl", plot_vs_kl(configs, points, "win_rate", "win rate against π_ref samples",
                                      title="win rate vs KL", frontier=False))
    if "exact_kl" in configs and configs["exact_kl"].notna().any():
        save("exact_vs_kl", plot_exact(configs, points, out["curves"]))
    if configs["eval_temperature"].nunique() > 1:
        save("vs_temperature", plot_vs_temperature(configs, points))
    for stem, fig in judge_figures(configs, points).items():
        save(stem, fig)
    if len(out["bon_gap"]):
        save("bon_gap_vs_kl", plot_bon_gap(out["bon_gap"], out["bon_gap_points"], points))
    return saved
