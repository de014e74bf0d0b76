"""`make pareto-plot` (`scripts/pareto_plot.py`, `python -m vbon_exp.analysis RUNS [--out DIR]`): the reward–KL
Pareto frontier of a sweep. Reads every `results.jsonl` under a runs directory (a Hydra multirun dir, or any tree of
runs), or the summaries of a wandb project's runs, writes the tables (analysis/tables.py) and figures
(analysis/figures.py) to `<RUNS>/pareto/` (or `--out`), prints frontier frequency, exact regret and the gap to BoN,
and logs it all to wandb unless `--wandb-mode disabled`. A problem the user fixes from the message alone exits 2
with one line (AnalysisError)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import pandas as pd

from vbon_exp.analysis.figures import write_figures
from vbon_exp.analysis.gold_exact import (
    format_hedgetune,
    gold_exact_tables,
    write_gold_exact,
    write_gold_figure,
)
from vbon_exp.analysis.gold_vs_proxy import format_gold_vs_proxy
from vbon_exp.analysis.inference_time import (
    format_inference,
    inference_tables,
    write_inference_figures,
    write_inference_tables,
)
from vbon_exp.analysis.load import AnalysisError, load_points, load_wandb_points, newest_sweep
from vbon_exp.analysis.sets import COMPARABLE, plottable
from vbon_exp.analysis.tables import format_bon_gap, format_frequency, format_regret, frontier_tables, write_tables
from vbon_exp.storage import atomic_write_text

# the tables logged to wandb (when not empty)
LOGGED_TABLES = ("points", "seed_means", "frontier", "frontier_frequency", "regret", "bon_gap", "gold_vs_proxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pareto_plot.py",
        description="The reward–KL Pareto frontier of a sweep: reads every results.jsonl under RUNS (or a wandb "
                    "project's runs), writes points.csv, seed_means.csv, frontier.csv, frontier_frequency.csv, "
                    "regret.csv (exact tasks), bon_gap.csv (with BoN from the pool), report.txt (what it prints) "
                    "and the plots (PNG + PDF) to RUNS/pareto/.")
    parser.add_argument("runs", nargs="?", default=None,
                        help="runs dir to read (searched recursively for results.jsonl); default: the newest "
                             "<output-root>/multirun/<date>/<time>")
    parser.add_argument("--out", default=None, help="output dir (default: RUNS/pareto, or "
                                                    "<output-root>/pareto/<project> with --wandb-project)")
    parser.add_argument("--output-root", default="outputs", help="where sweeps are found (default: outputs)")
    parser.add_argument("--group-by", default=None, metavar="COLUMNS",
                        help=f"comma-separated columns that define the comparable sets, one frontier per set, from "
                             f"{','.join(COMPARABLE)} (task always; those left out are pooled, e.g. --group-by task "
                             "pools everything of a task). Default: all of them (one frontier per set)")
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
    except AnalysisError as err:
        print(f"pareto_plot: error: {err}", file=sys.stderr)
        return 2


def _read(args) -> tuple[pd.DataFrame, str, Path, Path | None]:
    """(points, where they came from, output dir, the runs dir: None for wandb)."""
    if args.wandb_project:
        if args.runs:
            raise AnalysisError("give either a runs dir or --wandb-project, not both")
        points = load_wandb_points(args.wandb_project, args.wandb_entity)
        out_dir = Path(args.out or Path(args.output_root) / "pareto" / args.wandb_project.replace("/", "_"))
        return points, f"wandb:{args.wandb_project}", out_dir, None
    runs = Path(args.runs) if args.runs else newest_sweep(Path(args.output_root))
    return load_points(runs), str(runs), Path(args.out or runs / "pareto"), runs


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _report(out: dict, source: str) -> str:
    """What the CLI prints, and writes to `report.txt` beside the tables: the sets, failures and the three tables."""
    lines = []
    say = lines.append
    points = out["points"]
    failed = points[points["status"] != "ok"]
    say(f"pareto: {len(points)} results lines from {source}: {int(plottable(points).sum())} plotted, "
        f"{len(failed)} failed; {points.loc[plottable(points), 'set'].nunique()} comparable set(s)")
    for _, row in failed.iterrows():
        say(f"  failed: {row['objective']} beta={row['beta']} n={row['n']} seed={row['seed']}: "
            f"{_text(row.get('error_type'))}: {_text(row.get('error'))}")
    say("\nfrontier frequency (fraction of each objective's points on its seed's frontier, within its set; mean "
        "over seeds [95% t-interval]):")
    say(format_frequency(out["frontier_frequency"]))
    if len(out["regret"]):
        say("\nexact regret (exact frontier reward at the point's exact KL − its exact reward; mean over seeds "
            "[95% interval]):")
        say(format_regret(out["regret"]))
    if len(out["bon_gap"]):
        say("\nthe gap to BoN at matched KL (BoN from the pool at the point's KL, interpolated in N, minus the "
            "point; > 0: BoN is ahead; mean over seeds [95% interval]):")
        say(format_bon_gap(out["bon_gap"]))
    if len(out["gold_vs_proxy"]):
        say("\ngold versus proxy (each judge's win rate against π_ref, and the share of the proxy's gain over ½ it "
            "sees: seed mean ± SE; over-optimises: a share below the lowest of BoN's by > 2 SE):")
        say(format_gold_vs_proxy(out["gold_vs_proxy"]))
    for note in out["notes"]:
        say(f"note: {note}")
    return "\n".join(lines) + "\n"


def _log_to_wandb(args, mode: str, out: dict, figures: dict, out_dir: Path, source: str) -> int:
    from vbon_exp.analysis.wandb_upload import log_to_wandb

    entity, _, project = (args.wandb_project or "").rpartition("/")
    try:
        where = log_to_wandb(
            out_dir, figures, {name: out[name] for name in LOGGED_TABLES if len(out[name])}, mode=mode,
            project=args.log_project or project or "vbon_exp", entity=args.wandb_entity or entity,
            name=f"pareto-{project or Path(source).name}", source=source)
    except Exception as err:  # the local files are written; say why wandb did not take them
        print(f"pareto_plot: error: logging to wandb ({mode}) failed: {type(err).__name__}: {err} (the files in "
              f"{out_dir} are written; --wandb-mode offline or disabled avoids the server)", file=sys.stderr)
        return 1
    print(f"wandb ({mode}): {where}")
    return 0


def _main(args) -> int:
    from vbon_exp.tracking import resolve_wandb_mode

    try:
        mode = resolve_wandb_mode(args.wandb_mode)
    except ValueError as err:  # a bad $WANDB_MODE
        raise AnalysisError(str(err)) from None
    points, source, out_dir, runs_dir = _read(args)
    group_by = [c.strip() for c in args.group_by.split(",") if c.strip()] if args.group_by is not None else None
    out = frontier_tables(points, group_by, runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_tables(out, out_dir)
    inference = inference_tables(out["points"])  # runs with eval.inference_n: each policy behind BoN_N′
    written += write_inference_tables(inference, out_dir)
    gold = gold_exact_tables(out, runs_dir)  # the synthetic task's gold reward: gold vs KL, HedgeTune
    written += write_gold_exact(gold, out_dir)
    report = _report(out, source) + format_inference(inference) + format_hedgetune(gold["hedgetune"])
    print(report, end="")
    atomic_write_text(out_dir / "report.txt", report)
    written.append("report.txt")
    if not plottable(out["points"]).any():
        raise AnalysisError(f"none of the {len(points)} results lines from {source} is a successful run with a "
                            f"reward and a KL: nothing to plot (see {out_dir / 'points.csv'})")
    figures = {**write_figures(out, out_dir), **write_inference_figures(inference, out["points"], out_dir),
               **write_gold_figure(gold, out, out_dir)}
    print(f"\nwritten to {out_dir}/: {', '.join(written)}, " + ", ".join(f"{stem}.png/.pdf" for stem in figures))
    return _log_to_wandb(args, mode, out, figures, out_dir, source) if mode != "disabled" else 0
