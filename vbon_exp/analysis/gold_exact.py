"""Gold versus proxy, exactly (the synthetic task's gold reward, `task.gold`): every method's exact gold reward against
its exact KL beside its exact proxy reward against the same KL, so over-optimisation — the proxy still rising where
the gold reward has turned down — is measured, not anecdotal; and HedgeTune's answer (Khalaf et al. 2025,
arXiv:2506.19248): the N of BoN, the λ of soft BoN at each N, the μ of Best-of-Poisson (and the β of the proxy's
KL-regularised optimum π*_β) that maximise the exact gold reward, found on the exact curves the runs wrote beside
their results (exact_frontier.json, vbon_exp/tasks/synthetic_gold.py). From results files only.

  hedgetune.csv       per set and curve: the gold-optimal parameter on the curve's grid (`value`), the exact KL,
                      proxy reward, gold reward and gold win rate there; the same at the curve's most optimised end
                      (`*_at_end`) and what optimising that far loses in gold (`gold_loss_at_end`); `interior`: the
                      optimum is inside the grid (an optimum at an end says only that the grid stops there)
  gold_vs_kl.png/pdf  per set: exact proxy reward | exact gold reward vs exact KL, every method's seed means over the
                      exact curves, HedgeTune's optimum of each curve marked (★)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from vbon_exp.analysis.drawing import (
    draw_points,
    finish_panel,
    grid,
    make_room_for_legends,
    objective_styles,
    pyplot,
    save_figure,
)
from vbon_exp.analysis.frontier import exact_frontier_dir
from vbon_exp.analysis.sets import SEED, config_columns, plottable, seed_mean_row, sets_of
from vbon_exp.results import read_exact_frontiers

GOLD_METRICS = ("exact_kl", "exact_reward", "exact_gold_reward", "exact_win_rate", "exact_gold_win_rate")
# curve name (exact_frontier.json) -> (the objective whose points it belongs with, its label); soft BoN's curves are
# `gold_soft_bon_n<N>`, one per N. Each curve runs from its least to its most optimised end (KL increasing).
HEDGE_CURVES = {"gold_bon": ("bon", "BoN over N"),
                "gold_best_of_poisson": ("best_of_poisson", "Best-of-Poisson over μ"),
                "gold_optimum": ("kl_rl", "π*_β ∝ π_ref·exp(r/β) over β")}
SOFT_PREFIX = "gold_soft_bon_n"
PARAMETERS = ("n", "mu", "lam", "beta")  # the parameter a curve runs over
CURVE_VALUES = ("kl", "reward", "gold_reward", "gold_win_rate")


def hedge_curves(curves: dict) -> dict[str, tuple[str, str]]:
    """The gold curves among one set's exact curves: name -> (objective, label), in HEDGE_CURVES' order then soft BoN's
    by N."""
    out = {name: HEDGE_CURVES[name] for name in HEDGE_CURVES if name in curves}
    soft = sorted((name for name in curves if name.startswith(SOFT_PREFIX)), key=lambda s: int(s[len(SOFT_PREFIX):]))
    out.update({name: ("soft_bon", f"soft BoN over λ, N = {name[len(SOFT_PREFIX):]}") for name in soft})
    return out


def _parameter(curve: dict) -> str:
    return next(p for p in PARAMETERS if p in curve)


def hedge_row(set_label: str, name: str, label: str, curve: dict) -> dict:
    """HedgeTune on one exact curve: the grid point of the largest gold reward (the first, on a tie)."""
    parameter = _parameter(curve)
    gold = np.asarray(curve["gold_reward"], dtype=float)
    best = int(np.nanargmax(gold))
    row = {"set": set_label, "curve": name, "method": label, "parameter": parameter,
           "value": float(curve[parameter][best]), "interior": 0 < best < len(gold) - 1}
    if name.startswith(SOFT_PREFIX):
        row["n"] = int(name[len(SOFT_PREFIX):])
    for key in CURVE_VALUES:
        row[key] = float(curve[key][best])
    row["value_at_end"] = float(curve[parameter][-1])
    for key in CURVE_VALUES:
        row[f"{key}_at_end"] = float(curve[key][-1])
    row["gold_loss_at_end"] = row["gold_reward"] - row["gold_reward_at_end"]
    return row


def set_gold_curves(points: pd.DataFrame, runs_dir: Path | None) -> dict[str, dict]:
    """{set: its gold curves}, the union over the set's runs (soft BoN's are written by soft-BoN runs only:
    vbon_exp/tasks/synthetic_gold.py METHOD_CURVES), each run's exact_frontier.json entry at the line's evaluation
    temperature; a set whose runs wrote different task specs gets none (no one exact curve)."""
    if "exact_kl" not in points:
        return {}
    exact = points[plottable(points) & points["exact_kl"].notna()]
    read: dict[Path, list] = {}
    by_set: dict[str, dict[str, dict]] = {}  # set -> spec -> curves
    for _, row in exact.iterrows():
        run_dir = exact_frontier_dir(row, runs_dir)
        if run_dir is None:
            continue
        entries = read.setdefault(run_dir, read_exact_frontiers(run_dir))
        temperature = float(row.get("eval_temperature", math.nan))
        entry = next((e for e in entries if not math.isfinite(temperature)
                      or math.isclose(float(e["eval_temperature"]), temperature, rel_tol=1e-9)), None)
        if entry is not None:
            spec = json.dumps(entry["spec"], sort_keys=True)
            mine = by_set.setdefault(row["set"], {}).setdefault(spec, {})
            mine.update({k: v for k, v in entry["curves"].items() if k.startswith("gold_")})
    return {set_label: next(iter(specs.values())) for set_label, specs in by_set.items() if len(specs) == 1}


def hedgetune_table(curves: dict) -> pd.DataFrame:
    """hedgetune.csv from {set: gold curves} (set_gold_curves): one row per set and gold curve."""
    rows = [hedge_row(set_label, name, label, by_name[name])
            for set_label, by_name in curves.items() for name, (_, label) in hedge_curves(by_name).items()]
    return pd.DataFrame(rows)


def gold_seed_means(points: pd.DataFrame) -> pd.DataFrame:
    """Per configuration with exact gold values: each GOLD_METRICS' mean over seeds (with its 95% interval)."""
    if "exact_gold_reward" not in points:
        return pd.DataFrame()
    ok = points[plottable(points) & points["exact_gold_reward"].notna()]
    if ok.empty:
        return pd.DataFrame()
    keys = config_columns(ok)
    rows = []
    for key, group in ok.groupby(keys, dropna=False, sort=False):
        rows.append({**dict(zip(keys, key)), "seeds": group[SEED].nunique(dropna=False),
                     **seed_mean_row(group.assign(**{m: pd.to_numeric(group[m], errors="coerce")
                                                     for m in GOLD_METRICS if m in group}), GOLD_METRICS)})
    return pd.DataFrame(rows)


def gold_exact_tables(out: dict, runs_dir: Path | None) -> dict:
    """{curves, hedgetune, gold_seed_means} from frontier_tables' points and the runs' exact_frontier.json."""
    curves = set_gold_curves(out["points"], runs_dir)
    return {"curves": curves, "hedgetune": hedgetune_table(curves), "gold_seed_means": gold_seed_means(out["points"])}


def write_gold_exact(tables: dict, out_dir: Path) -> list[str]:
    """hedgetune.csv where there are gold curves; returns the names written."""
    if tables["hedgetune"].empty:
        return []
    tables["hedgetune"].to_csv(out_dir / "hedgetune.csv", index=False)
    return ["hedgetune.csv"]


def format_hedgetune(table: pd.DataFrame) -> str:
    """The report's lines: per set, each curve's gold-optimal parameter and what optimising further loses."""
    if table.empty:
        return ""
    lines = ["\nHedgeTune, exact (the parameter maximising the exact gold reward on each exact curve; 'at end': the "
             "curve's most optimised point):"]
    for set_label, mine in table.groupby("set", sort=False):
        lines.append(f"  {set_label}")
        for _, r in mine.iterrows():
            where = "" if r["interior"] else " (at the grid's end)"
            lines.append(f"    {r['method']:<38} {r['parameter']} = {r['value']:<8.4g}{where} gold "
                         f"{r['gold_reward']:.4f} at KL {r['kl']:.3f} (proxy {r['reward']:.4f}); at end "
                         f"{r['parameter']} = {r['value_at_end']:.4g}: gold {r['gold_reward_at_end']:.4f}, lost "
                         f"{r['gold_loss_at_end']:.4f}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- the figure

PANELS = (("exact_reward", "reward", "exact proxy reward (what the methods optimise)"),
          ("exact_gold_reward", "gold_reward", "exact gold reward (task.gold)"))
LINESTYLES = ("-", "--", "-.", ":")


def _right_edge(mine: pd.DataFrame, hedge: pd.DataFrame) -> float:
    """x up to 1.15 × the largest of the points' KL and the gold optima's KL."""
    kls = [*mine["exact_kl"].dropna().tolist(), *hedge["kl"].dropna().tolist()]
    top = max(kls) if kls else 1.0
    return 1.15 * top if top > 0 else 1.0


def _colour(styles: dict, objective: str) -> str:
    """The colour of the objective's points (a variant's, `soft_bon[λ=0.1]`, where only variants ran), else grey."""
    match = [key for key in styles if key == objective or str(key).startswith(f"{objective}[")]
    return styles[match[0]][0] if match else "0.35"


def _draw_gold_curves(ax, curves: dict, hedge: pd.DataFrame, value: str, styles: dict, right: float) -> None:
    soft = 0
    for name, (objective, label) in hedge_curves(curves).items():
        colour = _colour(styles, objective)
        style = LINESTYLES[soft % len(LINESTYLES)] if name.startswith(SOFT_PREFIX) else "-"
        soft += name.startswith(SOFT_PREFIX)
        kl, y = np.asarray(curves[name]["kl"], dtype=float), np.asarray(curves[name][value], dtype=float)
        shown = kl <= right
        ax.plot(kl[shown], y[shown], style, color=colour, linewidth=1.2, alpha=0.8, zorder=1, label=f"exact: {label}")
        best = hedge[hedge["curve"] == name]
        if value == "gold_reward" and len(best):
            ax.plot(best["kl"], best["gold_reward"], "*", color=colour, markersize=13, markeredgecolor="black",
                    zorder=4, label=f"gold optimum: {best['parameter'].iloc[0]} = {best['value'].iloc[0]:.3g}")


def plot_gold_vs_kl(gold_means: pd.DataFrame, points: pd.DataFrame, curves: dict, hedge: pd.DataFrame):
    """Per set with exact gold values: exact proxy reward and exact gold reward vs exact KL (module docstring)."""
    plt = pyplot()
    styles = objective_styles(points)
    sets = sets_of(gold_means)
    fig, axes = grid(plt, 2 * len(sets), "proxy and gold reward vs KL, exact (★: the gold optimum of each curve, "
                     "HedgeTune)", columns=2)
    ok = points[plottable(points)]
    for row, set_label in enumerate(sets):
        mine = gold_means[gold_means["set"] == set_label]
        mine_hedge = hedge[hedge["set"] == set_label] if len(hedge) else hedge
        right = _right_edge(mine, mine_hedge)
        for ax, (metric, value, ylabel) in zip(axes[2 * row:2 * row + 2], PANELS):
            _draw_gold_curves(ax, curves.get(set_label, {}), mine_hedge, value, styles, right)
            draw_points(ax, mine, ok[ok["set"] == set_label], "exact_kl", metric, styles, analytic=False)
            ax.set_xlim(-0.02 * right, right)
            finish_panel(ax, set_label, "exact KL(π ‖ π_ref)  [nats]", ylabel, mine.empty)
    make_room_for_legends(fig, axes)
    fig.tight_layout()
    return fig


def write_gold_figure(tables: dict, out: dict, out_dir: Path) -> dict[str, Path]:
    """gold_vs_kl.png/pdf where some point has an exact gold reward: {stem: PNG path}."""
    if tables["gold_seed_means"].empty:
        return {}
    fig = plot_gold_vs_kl(tables["gold_seed_means"], out["points"], tables["curves"], tables["hedgetune"])
    return {"gold_vs_kl": save_figure(fig, out_dir, "gold_vs_kl")}
