#!/usr/bin/env python
"""The reward–KL Pareto frontier of a sweep: `scripts/pareto_plot.py [RUNS] [--out DIR] [--wandb-project P]`.

RUNS defaults to the newest outputs/multirun/<date>/<time>; `make pareto-plot RUNS=<dir>` runs this. Everything is
in vbon_exp/analysis/ (`python -m vbon_exp.analysis` is the same command; `--help` lists the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's vbon_exp, installed or not

from vbon_exp.analysis.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
