#!/usr/bin/env python
"""`make bench`: the benchmark of vbon_exp/bench/ (`python -m vbon_exp.bench`; `--help` lists its sections and
options). Run it on an idle machine: every section reports the other processes' load and is timed again when they
disturbed it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's vbon_exp, installed or not

from vbon_exp.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
