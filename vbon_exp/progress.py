"""Progress bars that suit where the output goes: every loop a user waits on shows one (`progress`, a tqdm).

On a terminal it is tqdm's live bar. Where the output is not a terminal — a sweep member's log, CI, `make run > log`
— a bar that redraws itself with carriage returns leaves a log of hundreds of overwritten updates; there each bar
writes plain lines instead, at most one every VBON_EXP_PROGRESS_S seconds (default PLAIN_INTERVAL_S), and none for a
loop shorter than that."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

PLAIN_INTERVAL_S = 10.0


def plain_interval_s() -> float:
    """Seconds between two lines of a bar whose output is not a terminal ($VBON_EXP_PROGRESS_S, else 10)."""
    try:
        return max(0.0, float(os.environ.get("VBON_EXP_PROGRESS_S", PLAIN_INTERVAL_S)))
    except ValueError:
        return PLAIN_INTERVAL_S


class PlainLines:
    """A stream for tqdm that turns its carriage-return redraws into whole lines: each status it prints becomes one
    line; the blank redraw with which tqdm clears a finished bar writes nothing."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.strip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar (same arguments) for a loop a user waits on, written as plain timed lines when its stream (`file`,
    by default stderr) is not a terminal. Pass `refresh=False` to `set_postfix` in loops: a forced refresh prints."""
    stream = kwargs.pop("file", None) or sys.stderr
    if kwargs.get("disable") or is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    interval = plain_interval_s()
    kwargs.setdefault("mininterval", interval)
    kwargs.setdefault("delay", interval)  # a loop shorter than one interval prints nothing
    kwargs.setdefault("ascii", True)
    kwargs.setdefault("ncols", 100)
    return tqdm(iterable, file=PlainLines(stream), dynamic_ncols=False, **kwargs)
