"""Gold versus proxy: how much of what a method gains on the reward it trains on (the proxy) an independent judge
(`eval.judges`, e.g. a classifier trained on other labels, or VADER) sees too — over-optimisation in the sense of
Gao et al. 2023 is proxy up with gold flat or down.

Every judge scores the same evaluation samples as the proxy, and each win rate compares with π_ref samples scored by
the same model, so π_ref has win rate ½ under every judge. A configuration's *gain* under a model is its win rate
minus ½; its *gold share* under a judge is the judge's gain over the proxy's gain (1: the judge sees all of it; 0:
none; < 0: the judge sees it worse than π_ref; left out where the proxy's gain is under twice its SE). Its SE is
the larger of the spread over seeds and the runs' own win-rate SEs carried through the ratio. Selecting by the proxy (BoN) loses some of the gain to the judges'
disagreement with the proxy alone; a trained method that keeps less of its gain than BoN keeps at its KL exploits
the proxy beyond selection. `over_optimises_<judge>` says so where the share is below the lowest share of BoN's
points in the set (the most BoN ever loses) by more than twice its standard error.

  gold_vs_proxy.csv   per configuration (seed means): KL, proxy reward and win rate, each judge's reward, win
                      rate, gold share (with its SE over seeds) and the over-optimisation flag"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

KEYS = ("set", "objective", "beta", "n", "seeds")


def is_bon_sampling(objective: pd.Series) -> pd.Series:
    """BoN's rows, whatever their variant: `bon`, `bon[drawn]` (BoN from the pool has no judge columns; its fresh
    draws, objective=bon_drawn, do)."""
    return objective.astype(str).str.match(r"^bon(\[.*\])?$")


def judge_names(frame: pd.DataFrame) -> list[str]:
    return sorted({c.split("/")[1] for c in frame if str(c).startswith("judge/") and c.endswith("/win_rate")})


def gold_share(judge_win: pd.Series, proxy_win: pd.Series, proxy_se=0.0) -> pd.Series:
    """(judge win rate − ½) / (proxy win rate − ½); NaN where the proxy's gain is not clearly there (below 0.01 or
    below twice its standard error `proxy_se`): a ratio over noise says nothing."""
    gain = proxy_win - 0.5
    floor = np.maximum(0.01, 2 * np.nan_to_num(np.asarray(proxy_se, dtype=float)))
    return ((judge_win - 0.5) / gain).where(gain.abs() >= floor)


def share_per_seed(points: pd.DataFrame, judge: str) -> pd.DataFrame:
    """Each results line's gold share under `judge`, and its variance from the line's own win-rate SEs (delta
    method, the two win rates taken as independent: they score the same samples, so this overstates it)."""
    judge_win, proxy_win = points[f"judge/{judge}/win_rate"], points["win_rate"]
    proxy_se = points.get("win_rate_se", pd.Series(0.0, index=points.index)).fillna(0.0)
    judge_se = points.get(f"judge/{judge}/win_rate_se", pd.Series(0.0, index=points.index)).fillna(0.0)
    share = gold_share(judge_win, proxy_win, proxy_se)
    variance = (judge_se**2 + share**2 * proxy_se**2) / (proxy_win - 0.5) ** 2
    return points.assign(share=share, share_var=variance.where(share.notna()))


def gold_vs_proxy(points: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """The table of the module docstring from the per-seed points and their seed means (frontier_tables' `points`
    and `seed_means`), for the configurations some judge scored; empty without judges."""
    judges = judge_names(configs)
    if not judges or not len(configs):
        return pd.DataFrame()
    judged = configs[[f"judge/{j}/win_rate" for j in judges]].notna().any(axis=1)
    configs = configs[judged].reset_index(drop=True)  # BoN from the pool has no samples to judge
    ok = points[points["status"] == "ok"]
    keys = [k for k in ("set", "objective", "beta", "n") if k in configs]
    table = configs[[*(k for k in KEYS if k in configs), "kl", "reward", "win_rate"]].copy()
    is_bon = is_bon_sampling(configs["objective"]).to_numpy()
    for judge in judges:
        table[f"{judge}_reward"] = configs.get(f"judge/{judge}/reward")
        table[f"{judge}_win_rate"] = configs[f"judge/{judge}/win_rate"]
        grouped = share_per_seed(ok, judge).groupby(keys, dropna=False)
        count = grouped["share"].count()
        between = (grouped["share"].std(ddof=1) / np.sqrt(count)).fillna(0.0)  # over seeds (one seed: none)
        within = np.sqrt(grouped["share_var"].sum()) / count  # the runs' own sampling noise, propagated
        stats = pd.DataFrame({"mean": grouped["share"].mean(), "se": np.maximum(between, within)})
        joined = configs[keys].join(stats, on=keys)
        table[f"{judge}_share"] = joined["mean"].to_numpy()
        table[f"{judge}_share_se"] = joined["se"].to_numpy()
        table[f"over_optimises_{judge}"] = _flags(table, f"{judge}_share", is_bon)
    return table.reset_index(drop=True)


def _flags(table: pd.DataFrame, share: str, is_bon: np.ndarray) -> list[str]:
    """'yes' below BoN's lowest share in the set by > 2 SE (an SE of NaN, one seed, counts as 0), '' otherwise,
    'bon' on BoN's own rows, '-' without a share."""
    flags = []
    for i, row in table.iterrows():
        bon = table.loc[is_bon & (table["set"] == row["set"]).to_numpy(), share].dropna()
        value, se = row[share], row[f"{share}_se"]
        if is_bon[i]:
            flags.append("bon")
        elif math.isnan(value) or not len(bon):
            flags.append("-")
        else:
            flags.append("yes" if value < bon.min() - 2 * (0.0 if math.isnan(se) else se) else "")
    return flags


def format_gold_vs_proxy(table: pd.DataFrame) -> str:
    """The table for the terminal: one block per set."""
    judges = [c.removesuffix("_share") for c in table if c.endswith("_share")]
    blocks = []
    for set_label, mine in table.groupby("set", sort=False):
        shown = pd.DataFrame({"objective": mine["objective"], "beta": mine["beta"].map(lambda b: f"{b:.3g}"),
                              "KL": mine["kl"].map(lambda v: f"{v:.3f}"),
                              "proxy win": mine["win_rate"].map(lambda v: f"{v:.3f}")})
        for judge in judges:
            shown[f"{judge} win"] = mine[f"{judge}_win_rate"].map(lambda v: f"{v:.3f}")
            shown[f"{judge} share"] = [f"{m:.2f} ± {s:.2f}" if not math.isnan(s) else f"{m:.2f}"
                                       for m, s in zip(mine[f"{judge}_share"], mine[f"{judge}_share_se"])]
            shown[f"over-opt. ({judge})"] = mine[f"over_optimises_{judge}"]
        blocks.append(f"[{set_label}]\n" + shown.to_string(index=False))
    return "\n".join(blocks)
