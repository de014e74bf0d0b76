"""Which KL choices reach the KL-regularised optimum: the table and verdicts of `+experiment=kl_choices`.

Every results line of a KL-RL run on the synthetic task carries `exact_kl_to_optimum`, KL(π_θ ‖ π*) with
π* ∝ π_ref·exp(r/β) at the β training ended at, and `exact_kl_to_optimum_init`, the same for π_ref. Per combination
(algo, kl_in, kl_penalty, adaptive or not, β) over its seeds this module reports the mean and the spread of that
distance and its share of the initial one (`remaining` = KL(π_θ‖π*) / KL(π_ref‖π*)), the exact reward and KL, the
distance of the reference choice — the per-token k1 in the reward, whose policy gradient is that of
E[r] − β·KL(π_θ‖π_ref) exactly (Ziegler et al. 2019) — trained by the same algorithm at the same β and adaptivity,
and a verdict:
- `reaches π*`: at most REACH (5%) of π_ref's distance to π* is left, in every seed, and the mean distance is at
  most TWICE the reference choice's (what the same training length reaches with the right gradient);
- `unstable`: otherwise, when the seeds disagree (a spread over seeds of at least half the mean), or non-finite;
- `elsewhere`: otherwise: further, consistently over seeds.
(A failed run has no line and is not counted; `seeds` says how many of the 3 did count.)

  python -m vbon_exp.analysis.kl_choices outputs/results/kl_choices --out docs/results/kl_choices

writes kl_choices.csv (every combination) and the tables of README.md there, and prints them."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from vbon_exp.analysis.load import load_points
from vbon_exp.storage import atomic_write_text

KEYS = ["algo", "kl_in", "kl_penalty", "adaptive", "beta"]
REFERENCE = {"kl_in": "reward", "kl_penalty": "k1"}
REACH = 0.05  # at most this share of KL(π_ref ‖ π*) left, in every seed, counts as reaching π* ...
TWICE = 2.0  # ... when also within this factor of the reference choice's distance
METRICS = ("exact_kl_to_optimum", "exact_kl_to_optimum_init", "exact_reward", "exact_kl", "final_kl_coef")


def combinations(points: pd.DataFrame) -> pd.DataFrame:
    """One row per combination: seeds, mean and SD of each metric, `remaining` and its SD."""
    ok = points[(points["status"] == "ok") & points["exact_kl_to_optimum"].notna()].copy()
    ok["adaptive"] = ok["target_kl"].notna()
    ok["remaining"] = ok["exact_kl_to_optimum"] / ok["exact_kl_to_optimum_init"]
    rows = []
    for key, group in ok.groupby(KEYS, dropna=False, sort=True):
        row = dict(zip(KEYS, key), seeds=len(group))
        row["remaining_max"] = float(group["remaining"].max())
        for metric in (*METRICS, "remaining"):
            values = pd.to_numeric(group.get(metric), errors="coerce") if metric in group else pd.Series(dtype=float)
            row[metric] = float(values.mean()) if values.notna().any() else math.nan
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if values.notna().sum() > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """The table with `reference_kl_to_optimum` (k1 in the reward, same algo, β and adaptivity) and `verdict`."""
    table = table.copy()
    reference = table[(table["kl_in"] == REFERENCE["kl_in"]) & (table["kl_penalty"] == REFERENCE["kl_penalty"])]
    ref = reference.set_index(["algo", "adaptive", "beta"])["exact_kl_to_optimum"]
    table["reference_kl_to_optimum"] = [ref.get((a, ad, b), math.nan)
                                        for a, ad, b in zip(table["algo"], table["adaptive"], table["beta"])]
    table["verdict"] = [_verdict(row) for row in table.itertuples()]
    return table


def _verdict(row) -> str:
    mean, sd = row.exact_kl_to_optimum, row.exact_kl_to_optimum_sd
    if not math.isfinite(mean):
        return "unstable"
    if row.remaining_max <= REACH and mean <= TWICE * row.reference_kl_to_optimum:
        return "reaches π*"
    return "unstable" if math.isfinite(sd) and sd >= 0.5 * mean else "elsewhere"


def markdown(table: pd.DataFrame) -> str:
    """The table as markdown, one row per combination, β in columns of KL(π_θ‖π*) (± SD over seeds)."""
    lines = ["| algo | KL in | estimator | adaptive | β | KL(π_θ‖π*) ± SD | share left | k1-in-reward's | exact reward "
             "| exact KL | final β | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        beta = f"{r.final_kl_coef:.3g}" if math.isfinite(r.final_kl_coef) else "—"
        lines.append(f"| {r.algo} | {r.kl_in} | {r.kl_penalty} | {'yes' if r.adaptive else 'no'} | {r.beta:.3g} | "
                     f"{r.exact_kl_to_optimum:.3f} ± {r.exact_kl_to_optimum_sd:.3f} | {r.remaining:.3f} | "
                     f"{r.reference_kl_to_optimum:.3f} | "
                     f"{r.exact_reward:.3f} | {r.exact_kl:.3f} | {beta} | {r.verdict} |")
    return "\n".join(lines)


def summary(table: pd.DataFrame) -> str:
    """Per (kl_in, estimator): how many of its algo × adaptivity × β combinations reach π*, and the mean share left."""
    lines = ["| KL in | estimator | reach π* | elsewhere | unstable | mean share of KL(π_ref‖π*) left |",
             "|---|---|---|---|---|---|"]
    for (kl_in, penalty), group in table.groupby(["kl_in", "kl_penalty"], sort=True):
        counts = group["verdict"].value_counts()
        lines.append(f"| {kl_in} | {penalty} | {counts.get('reaches π*', 0)} / {len(group)} | "
                     f"{counts.get('elsewhere', 0)} | {counts.get('unstable', 0)} | {group['remaining'].mean():.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the sweep directory of +experiment=kl_choices")
    parser.add_argument("--out", type=Path, default=None, help="where kl_choices.csv and tables.md go (default: "
                        "<runs>/kl_choices)")
    args = parser.parse_args(argv)
    out = args.out or args.runs / "kl_choices"
    out.mkdir(parents=True, exist_ok=True)
    table = verdicts(combinations(load_points(args.runs)))
    atomic_write_text(out / "kl_choices.csv", table.to_csv(index=False))
    text = f"## By placement and estimator\n\n{summary(table)}\n\n## Every combination\n\n{markdown(table)}\n"
    atomic_write_text(out / "tables.md", text)
    print(text)
    print(f"wrote {out / 'kl_choices.csv'} and {out / 'tables.md'}")


if __name__ == "__main__":
    main()
