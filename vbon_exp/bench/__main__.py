"""`python -m vbon_exp.bench [options]`: the benchmark (vbon_exp/bench/cli.py; `--help`)."""

import sys

from vbon_exp.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
