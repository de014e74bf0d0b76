"""What the figures share: one colour, marker and legend name per objective, panels in a grid, seed means with
their 95% intervals over faint single seeds, legends that never cover the points, and saving as PNG + PDF."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


# One marker per objective, in the order of their names; colours from tab10, then Dark2 (objective_styles). Legend
# names come from the results lines (`objective_label`, each objective's declared label), so no list here names the
# objectives.
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "p")
LEGEND_INSIDE_MAX = 8  # legend entries that still fit inside a panel without covering its points
LEGEND_WIDTH_IN = 5.0  # inches added to each panel column for a legend placed beside it


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def objectives(points: pd.DataFrame) -> list[str]:
    return sorted(points["objective"].unique(), key=str)


def objective_styles(points: pd.DataFrame) -> dict:
    """objective -> (colour, marker, legend label), the same in every panel and figure of one table."""
    import matplotlib

    # tab10 repeats after ten methods (the whole family is eleven); Dark2 carries on (tab20's light halves would
    # pair a method with its neighbour's hue)
    colours = matplotlib.colormaps["tab10"].colors + matplotlib.colormaps["Dark2"].colors
    labels = {}
    if "objective_label" in points:
        for objective, label in points[["objective", "objective_label"]].dropna().itertuples(index=False):
            labels.setdefault(objective, label)
    return {objective: (colours[i % len(colours)], MARKERS[i % len(MARKERS)], labels.get(objective, objective))
            for i, objective in enumerate(objectives(points))}


def errorbar(ax, x, y, xerr, yerr, *, colour, marker, label, filled=True, zorder=3):
    ax.errorbar(
        x, y, xerr=xerr, yerr=yerr, fmt=marker, color=colour, ecolor=colour, elinewidth=0.8, capsize=2,
        markersize=7, markerfacecolor=colour if filled else "none", markeredgecolor=colour, markeredgewidth=1.2,
        alpha=0.9, label=label, zorder=zorder,
    )


def errorbar_interval(frame: pd.DataFrame, column: str):
    """The 95% interval as errorbar's [below, above] (none drawn where it is unknown)."""
    if f"{column}_ci_low" not in frame:
        return None
    mean = frame[column].to_numpy(dtype=float)
    below = mean - frame[f"{column}_ci_low"].to_numpy(dtype=float)
    above = frame[f"{column}_ci_high"].to_numpy(dtype=float) - mean
    return np.nan_to_num(np.vstack([below, above]), nan=0.0)


def grid(plt, panels: int, title: str, columns: int = 3):
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7.2 * columns, 5.6 * rows), squeeze=False)
    fig.suptitle(title, fontsize=13)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:panels])


def draw_points(ax, configs: pd.DataFrame, points: pd.DataFrame, x: str, y: str, styles: dict, *,
                analytic: bool) -> None:
    """Seed means with their 95% intervals, each seed's point faint behind them; BoN's analytic-KL points hollow."""
    for objective in objectives(configs):
        colour, marker, label = styles[objective]
        mine = configs[(configs["objective"] == objective) & configs[y].notna()].sort_values(x)
        if mine.empty:
            continue
        seeds = int(mine["seeds"].max())
        errorbar(ax, mine[x], mine[y], errorbar_interval(mine, x), errorbar_interval(mine, y), colour=colour,
                 marker=marker,
                 label=f"{label} ({len(mine)} points" + (f", mean of {seeds} seeds ± 95%)" if seeds > 1 else ")"))
        single = points[points["objective"] == objective]
        if seeds > 1:
            ax.scatter(single[x], single[y], s=16, marker=marker, color=colour, alpha=0.3, linewidths=0, zorder=2)
        if analytic and "kl_analytic" in mine and mine["kl_analytic"].notna().any():
            exact = mine[mine["kl_analytic"].notna()]
            errorbar(ax, exact["kl_analytic"], exact[y], None, None, colour=colour, marker=marker,
                     label=f"{label}, analytic KL log N − (N−1)/N", filled=False, zorder=2)


def legend_beside(ax) -> bool:
    """A long legend goes beside its panel: inside, it would hide the points."""
    return len(ax.get_legend_handles_labels()[1]) > LEGEND_INSIDE_MAX


def make_room_for_legends(fig, axes) -> None:
    """Widen the figure by a legend's width per panel column where the legends sit beside their panels (before
    tight_layout, so the panels keep their size)."""
    if axes and any(legend_beside(ax) for ax in axes):
        columns = axes[0].get_subplotspec().get_gridspec().ncols
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + LEGEND_WIDTH_IN * columns, height)


def finish_panel(ax, title: str, xlabel: str, ylabel: str, empty: bool, empty_text: str = "no successful runs"):
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=12)
    ax.set_ylabel(ylabel, fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=10)
    if empty:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes)
    elif legend_beside(ax):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, framealpha=0.9)
    else:
        ax.legend(fontsize=8, loc="lower right", framealpha=0.9)


def save_figure(fig, out_dir: Path, stem: str) -> Path:
    png = out_dir / f"{stem}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight")  # "tight": a legend placed beside its panel is kept
    fig.savefig(out_dir / f"{stem}.pdf", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png
