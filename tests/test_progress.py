"""vbon_exp/progress.py: a bar on a terminal redraws itself; where the output is not a terminal (a sweep member's log,
CI, `make run > log`) it writes whole lines, at most one per interval, and nothing for a loop shorter than that."""

from __future__ import annotations

import io

from vbon_exp.progress import PlainLines, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_short_loop_writes_nothing_to_a_log(monkeypatch):
    monkeypatch.delenv("VBON_EXP_PROGRESS_S", raising=False)  # the default interval, 10 s: far longer than the loop
    log = io.StringIO()
    for _ in progress(range(500), desc="sampling", file=log):
        pass
    assert log.getvalue() == ""


def test_updates_to_a_log_are_whole_lines_never_carriage_returns(monkeypatch):
    monkeypatch.setenv("VBON_EXP_PROGRESS_S", "0")  # every update may print: the lines are what is checked
    log = io.StringIO()
    bar = progress(total=5, desc="updates", file=log)
    for _ in range(5):
        bar.set_postfix(reward="0.5", refresh=False)
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 1 <= len(lines) <= 7 and all(line.startswith("updates:") for line in lines)
    assert "5/5" in lines[-1]


def test_a_terminal_gets_tqdms_live_bar():
    screen = Terminal()
    for _ in progress(range(3), desc="sampling", file=screen, mininterval=0):
        pass
    assert "\r" in screen.getvalue()


def test_plain_lines_drop_the_blank_redraw_that_clears_a_bar():
    out = io.StringIO()
    lines = PlainLines(out)
    lines.write("\rcache: 50%|#####     | 1/2")
    lines.write("\r" + " " * 40 + "\r")
    assert out.getvalue() == "cache: 50%|#####     | 1/2\n"
