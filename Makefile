# vbon_exp — `make run` and `make test` set everything up from nothing (a .venv), then run.
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch by default (it comes from this machine's local wheel). GPU users:
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"   (or TORCH=skip to keep yours)
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: install run test test-all clean pareto-plot bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if [ "$(TORCH)" != "skip" ]; then $(PY) -m pip install -q $(TORCH); fi
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# One run with the default config (override with ARGS="objective=bon objective.n=8 ...").
run: install
	$(PY) -m vbon_exp $(ARGS)

# Fast suite (≤ 8 min on 2 cores): one pytest worker per core (pytest-xdist), a test file per worker at a time (its
# module fixtures are built once); each worker and the runs it starts use one torch thread (tests/conftest.py).
# wandb never needs a server in tests. lint-imports first: the one-way layers of pyproject.toml's contracts.
# VBON_EXP_TEST_SEED_SHIFT=k moves every test seed by k (tests/conftest.py): the suite holds for any draw.
PYTEST_WORKERS ?= auto
test: install
	$(VENV)/bin/lint-imports
	WANDB_MODE=offline $(PY) -m pytest -q -m "not slow" -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Everything, slow tests included.
test-all: install
	$(VENV)/bin/lint-imports
	WANDB_MODE=offline $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The reward–KL Pareto frontier of a sweep: tables and plots in $(RUNS)/pareto/ (scripts/pareto_plot.py --help),
# and the training curves of its trained runs (training_curves.{png,csv}: vbon_exp/analysis/curves.py).
# RUNS defaults to the newest outputs/multirun/<date>/<time>; PARETO_ARGS passes options (--out, --wandb-mode,
# --group-by task to pool a task's comparable sets into one frontier ...).
RUNS ?=
pareto-plot: install
	$(PY) scripts/pareto_plot.py $(RUNS) $(PARETO_ARGS)
	$(PY) -m vbon_exp.analysis.curves $(RUNS)

# Throughput against transformers.generate and TRL (scripts/bench.py --help): a table, and outputs/bench/summary.json.
# DEVICE=cuda times the sampler, one PPO step, a reference-cache build (and vLLM when installed) on a GPT-2-small-sized
# model on the GPU, in DTYPE (default bfloat16 there, float32 on cpu). On cpu it installs the optional `bench` extra
# (TRL, the RLOO baseline) first; BENCH_ARGS passes options (--skip-trl, --reps 5 ...). Run it on an idle machine:
# timings share the CPU with everything else.
DEVICE ?= cpu
DTYPE  ?=
bench: install
	if [ "$(DEVICE)" = cpu ]; then $(PY) -m pip install -q -e '.[bench]'; fi
	$(PY) scripts/bench.py --device $(DEVICE) $(if $(DTYPE),--dtype $(DTYPE)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
