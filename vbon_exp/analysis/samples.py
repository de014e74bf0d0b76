"""Read what runs actually wrote: their evaluation samples (`<run_dir>/samples.parquet`) side by side.

    python -m vbon_exp.analysis.samples RUN_DIR [RUN_DIR ...] [--prompts 5] [--per-run 2] [--extremes 2]
                                        [--width 60] [--eval-temperature T]

Per prompt (matched across runs by its text, in prompt order), each run's first responses with their rewards:
side by side for two or three runs (columns of --width characters), stacked for more; then per run its highest-
and lowest-reward responses overall. A number says little about what a policy does (a reward hacked by repetition,
a BoN that always keeps the longest text): this is the look at the text behind it."""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import textwrap
from pathlib import Path

import pandas as pd

from vbon_exp.analysis.load import load_samples, run_identity
from vbon_exp.results import SAMPLES_FILE

SIDE_BY_SIDE_MAX = 3  # more runs than this are stacked: wider would not fit a terminal
SEPARATOR = " │ "


def run_label(identity: dict, samples: pd.DataFrame) -> str:
    """`objective β=… N=… seed=…` from the run's results.jsonl (the samples' own columns where it has none)."""
    def value(column):
        if identity.get(column) is not None:
            return identity[column]
        values = samples[column].dropna().unique() if column in samples else []
        return values[0] if len(values) == 1 else None

    parts = [str(value("objective") or "?")]
    for column, name in (("beta", "β"), ("n", "N"), ("seed", "seed")):
        v = value(column)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            parts.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return " ".join(parts)


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    """`text` wrapped to `width` columns, its own line breaks kept (an empty text shows as ∅)."""
    lines = []
    for paragraph in (str(text).splitlines() or [""]):
        lines += textwrap.wrap(paragraph, width, initial_indent=indent, subsequent_indent=indent,
                               drop_whitespace=True) or [indent]
    return lines if str(text).strip() else [indent + "∅ (empty)"]


def scores(row: pd.Series) -> str:
    """`reward 0.873` and each judge's score (`judge/<name>` columns)."""
    judged = [f"{c.removeprefix('judge/')} {row[c]:.3g}" for c in row.index
              if str(c).startswith("judge/") and pd.notna(row[c])]
    return " · ".join([f"reward {row['reward']:.4g}", *judged])


def response_block(row: pd.Series, width: int, prompt: bool = False) -> list[str]:
    """One response: `#sample  reward …` then its text (with `prompt`, the prompt's start first)."""
    kept = "bon_kept" in row and pd.notna(row["bon_kept"]) and pd.notna(row.get("bon_n"))
    head = f"#{int(row['sample'])}  {scores(row)}" + (f"  (BoN kept #{int(row['bon_kept'])} of {int(row['bon_n'])})"
                                                  if kept else "")
    lines = wrap(head, width)
    if prompt:
        lines += wrap(f"prompt {int(row['prompt_index'])}: " + shorten(row["prompt"], 2 * width), width, "  ")
    return lines + wrap(row["response"], width, "  ")


def shorten(text: str, chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= chars else "…" + text[-(chars - 1):]  # the end: where the response carries on


def columns(blocks: list[list[str]], width: int) -> list[str]:
    """Blocks of lines side by side, each padded to `width`."""
    return [SEPARATOR.join(line.ljust(width) for line in row).rstrip()
            for row in itertools.zip_longest(*blocks, fillvalue="")]


def prompt_order(runs: dict[str, pd.DataFrame]) -> list[str]:
    """Every prompt text of the runs, by the smallest prompt_index any run gives it."""
    first = pd.concat([frame[["prompt", "prompt_index"]] for frame in runs.values()])
    return first.groupby("prompt", sort=False)["prompt_index"].min().sort_values(kind="stable").index.tolist()


def pick_temperature(runs: dict[str, pd.DataFrame], asked: float | None) -> tuple[float | None, str | None]:
    """(the evaluation temperature shown, a note): --eval-temperature, else the lowest one every run has."""
    per_run = [set(frame["eval_temperature"].dropna()) for frame in runs.values() if "eval_temperature" in frame]
    every = sorted(set.union(*per_run)) if per_run else []
    if asked is not None or len(every) <= 1:
        return asked, None
    shared = sorted(set.intersection(*per_run)) or every
    note = (f"the runs were evaluated at temperatures {', '.join(f'{t:g}' for t in every)}: showing "
            f"{shared[0]:g} (--eval-temperature picks another)")
    return shared[0], note


def at_temperature(frame: pd.DataFrame, temperature: float | None) -> pd.DataFrame:
    if temperature is None or "eval_temperature" not in frame:
        return frame
    return frame[(frame["eval_temperature"] - temperature).abs() <= 1e-9]


def heading(label: str, run_dir: str, width: int) -> list[str]:
    """A run's label, then its dir (on a line of its own: a path is one long word)."""
    return wrap(label, width) + textwrap.wrap(run_dir, width)


def prompt_blocks(runs: dict, labels: dict, prompt: str, per_run: int, width: int) -> list[list[str]]:
    """Per run: its heading and its first `per_run` responses to `prompt`."""
    blocks = []
    for run_dir, frame in runs.items():
        mine = frame[frame["prompt"] == prompt].sort_values("sample").head(per_run)
        block = heading(labels[run_dir], run_dir, width)
        for _, row in mine.iterrows():
            block += response_block(row, width)
        blocks.append(block if len(mine) else block + ["  (no samples of this prompt)"])
    return blocks


def report(runs: dict[str, pd.DataFrame], labels: dict, *, prompts: int, per_run: int, extremes: int,
           width: int) -> list[str]:
    """The printed text: per prompt each run's responses (side by side for ≤ 3 runs), then per run its extremes."""
    side_by_side = 2 <= len(runs) <= SIDE_BY_SIDE_MAX
    full = len(runs) * width + len(SEPARATOR) * (len(runs) - 1) if side_by_side else width
    out = []
    for prompt in prompt_order(runs)[:prompts]:
        index = min(int(f.loc[f["prompt"] == prompt, "prompt_index"].min()) for f in runs.values()
                    if (f["prompt"] == prompt).any())
        out += ["", "═" * full, *wrap(f"prompt {index}: {prompt}", full), "─" * full]
        blocks = prompt_blocks(runs, labels, prompt, per_run, width)
        out += columns(blocks, width) if side_by_side else [line for b in blocks for line in [*b, ""]]
    for run_dir, frame in runs.items() if extremes > 0 else ():
        out += ["", "═" * full, *heading(f"{labels[run_dir]}: its extremes over {len(frame)} samples", run_dir,
                                          full)]
        ranked = frame.sort_values("reward", ascending=False, kind="stable")
        for title, rows in (("highest reward", ranked.head(extremes)),
                            ("lowest reward", ranked.tail(extremes).iloc[::-1])):
            out += ["─" * full, title + ":"]
            for _, row in rows.iterrows():
                out += response_block(row, full, prompt=True)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vbon_exp.analysis.samples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help=f"run dirs holding {SAMPLES_FILE}")
    parser.add_argument("--prompts", type=int, default=5, help="prompts shown, in prompt order (default 5)")
    parser.add_argument("--per-run", type=int, default=2, help="responses per run and prompt (default 2)")
    parser.add_argument("--extremes", type=int, default=2,
                        help="highest- and lowest-reward responses per run (default 2 each; 0: none)")
    parser.add_argument("--width", type=int, default=60, help="characters per column (default 60)")
    parser.add_argument("--eval-temperature", type=float, default=None,
                        help="the evaluation temperature shown where runs have several (default: the lowest all "
                             "runs share)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    present = [d for d in args.run_dirs if (Path(d) / SAMPLES_FILE).is_file()]
    for missing in (d for d in args.run_dirs if d not in present):
        print(f"{missing}: no {SAMPLES_FILE} (not a run dir, or a run written before samples were saved)")
    if not present:
        print(f"samples: error: none of the {len(args.run_dirs)} run dir(s) has a {SAMPLES_FILE}", file=sys.stderr)
        return 2
    samples = load_samples(present)
    runs = {d: samples[samples["run_dir"] == str(Path(d))] for d in present}
    labels = {d: run_label(run_identity(Path(d)), frame) for d, frame in runs.items()}
    for d in [d for d, frame in runs.items() if frame.empty]:
        print(f"{d}: its {SAMPLES_FILE} holds no samples")
        del runs[d]
    temperature, note = pick_temperature(runs, args.eval_temperature)
    runs = {d: at_temperature(frame, temperature) for d, frame in runs.items()}
    for d in [d for d, frame in runs.items() if frame.empty]:
        print(f"{d}: no samples at evaluation temperature {temperature:g}")
        del runs[d]
    if note:
        print(f"note: {note}")
    if runs:
        print("\n".join(report(runs, labels, prompts=args.prompts, per_run=args.per_run, extremes=args.extremes,
                               width=args.width)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
