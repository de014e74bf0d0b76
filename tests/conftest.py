"""Shared fixtures for the vbon_exp test suite.

Everything runs on CPU, offline: wandb is forced into offline mode (no server), the Hugging Face hub is never
contacted (all models are built locally from fixed seeds), and torch uses one thread (the models are tiny; on a
2-core machine shared with another process, OpenMP spin-waiting made 2-thread sampling ~100× slower).
"""

from __future__ import annotations

import os

# Before anything imports wandb / transformers: no server, no hub, no prompts, no console capture.
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["WANDB_CONSOLE"] = "off"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread in the suite's processes and the runs they start (`threads: auto` reads it): the models are tiny,
# and the suite may run two workers on two cores (`make test`), where more threads than idle cores stall.
os.environ["OMP_NUM_THREADS"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Every test seed shifts by VBON_EXP_TEST_SEED_SHIFT (default 0): the run seeds of composed configs and command lines,
# the tests' generators (`seeded`), the seeds handed to samplers and caches (`shifted`) and torch's global seed before
# each test. A test must hold for any draw, so the suite passes at every shift; floating-point draws differ between
# CPUs, and a shift is how one machine sees other draws. The recorded-value regression tests
# (tests/test_trainer_regression.py) keep their seeds: their values were recorded at them.
SEED_SHIFT = int(os.environ.get("VBON_EXP_TEST_SEED_SHIFT", "0"))


def shifted(seed: int) -> int:
    """A test's seed, moved by VBON_EXP_TEST_SEED_SHIFT."""
    return int(seed) + SEED_SHIFT


def seeded(seed: int) -> torch.Generator:
    """A CPU generator at the test's shifted seed."""
    return torch.Generator().manual_seed(shifted(seed))


def perturbed(model, std: float, seed: int):
    """A copy of `model` with Gaussian noise of `std` on every weight, drawn at the test's shifted `seed`: a policy
    clearly different from π_ref."""
    import copy

    model = copy.deepcopy(model)
    g = seeded(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def shift_seed_overrides(overrides) -> list[str]:
    """Hydra overrides (or a command line) with the run seed shifted: `seed=k` becomes `seed=k+shift` (each value of
    a sweep axis too); without one, `seed=<shift>` (the default seed 0, shifted) joins the first override (a command
    line's overrides must stay together: argparse refuses one that follows a flag after others)."""
    out, has_seed = [], False
    for override in overrides:
        key, sep, value = str(override).partition("=")
        if sep and key.lstrip("+") == "seed":
            has_seed = True
            try:
                value = ",".join(str(shifted(int(v))) for v in value.split(","))
            except ValueError:  # not a number: the test checks that it is refused
                pass
            override = f"{key}={value}"
        out.append(override)
    if has_seed or not SEED_SHIFT:
        return out
    first = next((i for i, arg in enumerate(out) if "=" in arg and not arg.startswith("-")), -1)
    return [*out[: first + 1], f"seed={SEED_SHIFT}", *out[first + 1:]]


@pytest.fixture(autouse=True)
def _shifted_global_seed():
    """torch's, numpy's and random's global generators at the shifted seed before every test: draws a test does not
    seed itself are deterministic too, and move with the shift."""
    import random

    import numpy as np

    random.seed(SEED_SHIFT)
    np.random.seed(SEED_SHIFT)
    torch.manual_seed(SEED_SHIFT)


REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"

# The flat reference: init_std small enough that no response carries more than 1e-3 of π_ref's mass, so rewards
# behave as continuous and the BoN formulas for continuous rewards (KL = log N − (N−1)/N, ...) hold to ~1e-5.
FLAT_INIT_STD = 0.04


@pytest.fixture(scope="session", autouse=True)
def _wandb_dirs(tmp_path_factory):
    """Keep wandb's cache/config/data dirs out of $HOME."""
    root = tmp_path_factory.mktemp("wandb-home")
    old = {k: os.environ.get(k) for k in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_DIR")}
    for key in old:
        os.environ[key] = str(root / key.lower())
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """One cache_dir shared by every synthetic task the session builds (the model artifacts are keyed by spec)."""
    return tmp_path_factory.mktemp("synthetic-cache")


# The peaky reference the sampler and oracle tests were calibrated on (conf/task/synthetic.yaml's default is 0.1).
PEAKY_INIT_STD = 0.5


def build_synthetic(cache_dir: Path, temperature: float = 1.0, **kwargs):
    """The synthetic task from SyntheticTaskConfig's defaults, with `kwargs` overriding its keys (init_std defaults
    to the peaky 0.5 here)."""
    from vbon_exp.tasks import synthetic

    cfg = synthetic.SyntheticTaskConfig(**{"init_std": PEAKY_INIT_STD, **kwargs})
    return synthetic.build(cfg, device=torch.device("cpu"), cache_dir=str(cache_dir), temperature=temperature)


@pytest.fixture(scope="session")
def synthetic_task(artifacts_dir):
    """The synthetic task with a peaky π_ref (init_std=0.5), temperature 1."""
    return build_synthetic(artifacts_dir)


@pytest.fixture(scope="session")
def flat_synthetic_task(artifacts_dir):
    """The synthetic task with a flat π_ref (init_std=0.04; max response mass ≈ 7e-4, checked where it matters)."""
    return build_synthetic(artifacts_dir, init_std=FLAT_INIT_STD)


@pytest.fixture(scope="session")
def tied_synthetic_task(artifacts_dir):
    """The flat synthetic task with its reward rounded to 5 levels (`task.reward_levels=5`): many responses tie, so
    BoN's exact KL is well below log N − (N−1)/N (2.03 against 3.17 at N = 64)."""
    return build_synthetic(artifacts_dir, init_std=FLAT_INIT_STD, reward_levels=5)


@pytest.fixture(scope="session")
def synthetic_task_t07(artifacts_dir):
    """The default synthetic task whose π_ref (and exact oracle) is the model sampled at temperature 0.7."""
    return build_synthetic(artifacts_dir, temperature=0.7)


# --------------------------------------------------------------------------- `python -m vbon_exp` in a subprocess


def cli_env(**extra) -> dict:
    """The environment of a command-line run in a test: no API key, wandb offline, no hub, one torch thread (the
    suite's processes share 2 cores), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "HYDRA_FULL_ERROR")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    """`python -m vbon_exp *args`, the run seed shifted (shift_seed_overrides)."""
    import sys

    return [sys.executable, "-m", "vbon_exp", *shift_seed_overrides(args)]


def run_cli(*args: str, timeout: float = 300, **env):
    """`python -m vbon_exp *args` to its end: the CompletedProcess, output captured as text."""
    import subprocess

    return subprocess.run(cli_command(*args), cwd=REPO_ROOT, env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_app(*args: str, **env):
    """`python -m vbon_exp *args` in this process: the same entry point (vbon_exp/__main__.py run as __main__: Hydra's app, the
    composition-error handling, validation, the run, the `vbon_exp: error:` line and its exit status), its stdout and
    stderr captured, `env` set in os.environ for the call. A CompletedProcess like run_cli's: returncode is the
    SystemExit code (0 when the app returns). No interpreter start and no torch/transformers import per call (what
    a subprocess costs: seconds); what only a real process shows (a kill, the interpreter's own exit) stays with
    run_cli. Hydra's logging configuration is undone afterwards, so the test process's logging is as it was. Hydra
    re-raises a composition error instead of reporting it when it believes a debugger is attached, which it reads off
    sys.gettrace() (set under `--cov`): for the call it is told that none is, as in a plain `python -m vbon_exp`."""
    import contextlib
    import io
    import logging
    import subprocess
    import sys

    import runpy

    import hydra._internal.utils as hydra_utils

    from vbon_exp import launch

    argv = ["vbon_exp", *shift_seed_overrides(args)]
    env = {"HYDRA_FULL_ERROR": None, "WANDB_API_KEY": None, **env}
    saved_env = {key: os.environ.get(key) for key in env}
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    saved_logging = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    saved_argv, saved_state, under_debugger = sys.argv, dict(launch._STATE), hydra_utils.is_under_debugger
    out, err = io.StringIO(), io.StringIO()
    code = 0
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(value)
    try:
        sys.argv = argv
        hydra_utils.is_under_debugger = lambda: False
        launch._STATE.update(composed=False, recording=None)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:  # as `python -m` runs it (module __main__: Hydra finds conf/ next to the package's file)
                runpy.run_module("vbon_exp", run_name="__main__", alter_sys=True)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved_argv
        hydra_utils.is_under_debugger = under_debugger
        launch._STATE.clear()
        launch._STATE.update(saved_state)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for lg, handlers, level, propagate, disabled in saved_logging:
            for handler in lg.handlers:
                if handler not in handlers:  # what Hydra added (its console and run-dir file handlers)
                    handler.close()
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it), for a test's own process group: a fixed port would collide
    with another run of the suite, or anything else, on the same machine."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- composed configs


def compose_config(output_root, overrides=()):
    """Compose conf/config.yaml like the CLI does, with `paths.output_root` redirected."""
    from hydra import compose, initialize_config_dir

    import vbon_exp.config  # noqa: F401  (registers the n_from_beta / beta_from_n resolvers)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_root={output_root}", *shift_seed_overrides(overrides)])


def compose_cfg(output_root, *overrides):
    """A run's config in a test: compose_config with wandb disabled, on the CPU, one torch thread (what `threads: auto`
    gives with the suite's $OMP_NUM_THREADS=1, without auto's 0.2 s measurement of the other processes' load)."""
    return compose_config(output_root, ["wandb.mode=disabled", "device=cpu", "threads=1", *overrides])


def run_point(output_root, run_dir, *overrides) -> dict:
    """`vbon_exp.run.run` of compose_cfg(output_root, *overrides) in `run_dir`: its (first) results line."""
    from vbon_exp.run import run

    return run(compose_cfg(output_root, *overrides), run_dir=run_dir)


# The synthetic task with 3-token responses: its exact oracle (a forward pass over every response, a few times a run)
# enumerates 6³ = 216 responses per prompt instead of 6⁵ = 7,776, and every forward pass is shorter. For the tests
# whose property does not depend on the response length (resuming, bookkeeping, equal code paths, convergence).
SHORT_RESPONSES = "task.response_length=3"


def short_training(updates: int) -> tuple[str, ...]:
    """The overrides of a convergence check in the fast tier: 3-token responses and `updates` updates of the synthetic
    task's 64 episodes (conf/scale/synthetic.yaml; 100 updates at full size, run by the slow variants). Each test
    states the ratios it measured at this size over several seeds (VBON_EXP_TEST_SEED_SHIFT)."""
    return (SHORT_RESPONSES, f"algo.total_episodes={64 * updates}")


# A convergence test's two sizes: the short run in the fast tier, the synthetic task's own scale with `make test-all`.
def sizes(short: tuple[str, ...]) -> list:
    return [pytest.param(short, id="short"), pytest.param((), id="full", marks=pytest.mark.slow)]


def covering_pairs(first: list, second: list) -> list[tuple]:
    """max(len(first), len(second)) pairs in which every value of each list appears (a diagonal through the grid, both
    lists cycled): a preset's objectives × β grid checked in the fast tier with one composition per objective (or per
    β), every value still composed and validated; the whole grid is checked by a slow test."""
    size = max(len(first), len(second))
    return [(first[i % len(first)], second[i % len(second)]) for i in range(size)]


@pytest.fixture
def make_config(tmp_path):
    """`make_config(*overrides)` → composed DictConfig writing under this test's tmp_path."""

    def make(*overrides):
        return compose_config(tmp_path / "out", overrides)

    return make


def build_task_from_config(cfg, device: str = "cpu"):
    """The task of a composed config, as a run builds it: validated, then vbon_exp.tasks.build_task."""
    from vbon_exp.config import validate
    from vbon_exp.tasks import build_task

    nodes = validate(cfg)
    return build_task(nodes.task, device=torch.device(device), cache_dir=nodes.paths.cache_dir,
                      sampling=nodes.sampling, model=nodes.model, reward=nodes.reward)
