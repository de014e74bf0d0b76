"""Training curves of a sweep: each run's `train_log.jsonl` (written by vbon_exp.tracking) as reward-per-update
lines, one panel per objective, and a table saying whether each run's reward had flattened by the end.

    python -m vbon_exp.analysis.curves RUNS [--out DIR]       (make pareto-plot draws them too)

"Flattened" is measured, not eyeballed: the mean training reward over the last quarter of the logged updates
against the quarter before it, in units of the run's own update-to-update noise (the standard error of the last
quarter's mean). |Δ| ≤ 2 SE is flat: the reward moved no more than its noise between the two quarters."""

from __future__ import annotations

import argparse
import csv
import logging
import math
from pathlib import Path

from vbon_exp.analysis.load import AnalysisError, newest_sweep
from vbon_exp.results import RESULTS_FILE, TRAIN_LOG_FILE, find_files, read_lines

log = logging.getLogger(__name__)

FLAT_SE = 2.0  # |last quarter − previous quarter| ≤ 2 SE of the last quarter's mean counts as flat


def run_curve(run_dir: Path, metric: str = "train/reward") -> list[tuple[int, float]]:
    """(step, value) of one run, the last value logged for each step (a resumed run logs re-done steps again)."""
    by_step = {}
    for row in read_lines(Path(run_dir) / TRAIN_LOG_FILE):
        if row.get("step") is not None and isinstance(row.get(metric), (int, float)):
            by_step[int(row["step"])] = float(row[metric])
    return sorted(by_step.items())


def flatness(values: list[float]) -> dict:
    """The last quarter's mean, its change from the quarter before, and that change in SEs (see the module doc)."""
    q = len(values) // 4
    if q < 2:
        return {"final": values[-1] if values else math.nan, "delta": math.nan, "delta_se": math.nan, "flat": None}
    last, before = values[-q:], values[-2 * q : -q]
    mean = sum(last) / q
    sd = math.sqrt(sum((v - mean) ** 2 for v in last) / (q - 1))
    se = sd / math.sqrt(q) if sd > 0 else math.inf
    delta = mean - sum(before) / q
    ratio = abs(delta) / se if se not in (0, math.inf) else 0.0
    return {"final": mean, "delta": delta, "delta_se": ratio, "flat": ratio <= FLAT_SE}


def sweep_curves(runs_dir: Path) -> list[dict]:
    """One record per trained run under `runs_dir`: its identity (from results.jsonl), its curve and flatness."""
    out = []
    for log_path in find_files(Path(runs_dir), TRAIN_LOG_FILE):
        run_dir = log_path.parent
        results = read_lines(run_dir / RESULTS_FILE) if (run_dir / RESULTS_FILE).exists() else []
        ident = results[0] if results else {}
        curve = run_curve(run_dir)
        if not curve:
            continue
        out.append({"run_dir": str(run_dir), "objective": ident.get("objective", "?"), "beta": ident.get("beta"),
                    "seed": ident.get("seed"), "steps": [s for s, _ in curve], "reward": [v for _, v in curve],
                    **flatness([v for _, v in curve])})
    return out


def write_table(records: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["objective", "beta", "seed", "updates", "final_reward", "last_quarter_change", "change_in_se",
                    "flat", "run_dir"])
        for r in records:
            w.writerow([r["objective"], r["beta"], r["seed"], len(r["steps"]), f"{r['final']:.5g}",
                        f"{r['delta']:.4g}", f"{r['delta_se']:.3g}", r["flat"], r["run_dir"]])
    return path


def plot(records: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = sorted({r["objective"] for r in records})
    betas = sorted({r["beta"] for r in records if r["beta"] is not None})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(objectives), figsize=(4.2 * len(objectives), 3.4), squeeze=False, sharey=True)
    for ax, objective in zip(axes[0], objectives):
        for r in (r for r in records if r["objective"] == objective):
            colour = cmap(betas.index(r["beta"]) / max(1, len(betas) - 1)) if r["beta"] in betas else "grey"
            ax.plot(r["steps"], r["reward"], color=colour, lw=1, alpha=0.8,
                    label=f"β={r['beta']:.3g}" if r["seed"] in (0, None) and r["beta"] is not None else None)
        ax.set_title(objective)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training reward (batch mean)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", help="a sweep directory (default: the newest outputs/multirun/<date>/<time>)")
    p.add_argument("--out", help="where to write training_curves.{png,csv} (default RUNS/pareto)")
    args = p.parse_args(argv)
    if args.runs is None:
        try:
            args.runs = str(newest_sweep(Path("outputs")))
        except AnalysisError:
            print("no sweep under outputs/multirun: pass a runs directory")
            return 2
    records = sweep_curves(Path(args.runs))
    if not records:
        print(f"no {TRAIN_LOG_FILE} under {args.runs}: no trained run to draw")
        return 0
    out = Path(args.out or Path(args.runs) / "pareto")
    table, figure = write_table(records, out / "training_curves.csv"), plot(records, out / "training_curves.png")
    flat = sum(bool(r["flat"]) for r in records)
    print(f"training curves of {len(records)} runs: {flat} flat by the end (|Δ last quarter| ≤ {FLAT_SE:g} SE)")
    print(f"  {figure}\n  {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
