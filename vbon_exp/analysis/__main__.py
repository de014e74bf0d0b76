"""`python -m vbon_exp.analysis [RUNS] [--out DIR] ...`: the Pareto plot of a sweep (analysis/cli.py)."""

import sys

from vbon_exp.analysis.cli import main

if __name__ == "__main__":
    sys.exit(main())
