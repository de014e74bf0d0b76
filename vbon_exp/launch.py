"""What happens around Hydra's main (`python -m vbon_exp`): a command line that does not fit the config becomes
exit status 2 and one `vbon_exp: error:` line, like every other bad input.

Hydra reports such a command line (an unknown key, a wrong type, a missing option) itself and exits with status 1
before any run starts. A Hydra callback (`hydra.callbacks.composed` in conf/config.yaml) marks the moment the
config has been composed; an exit with status 1 before that moment is a composition error. Its message (Hydra's,
which names the key) is kept from stderr and repeated on the one error line. This module imports nothing of the
package, so functions pickled for a parallel sweep (hydra/launcher=joblib) reference it by name."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

_STATE = {"composed": False, "recording": None}


class ComposedCallback(Callback):
    """Marks that Hydra composed the config (single run or sweep): exits from here on are the run's own."""

    def on_run_start(self, config, **kwargs) -> None:
        _STATE["composed"] = True

    def on_multirun_start(self, config, **kwargs) -> None:
        _STATE["composed"] = True


class _RecordingStderr:
    """stderr that also keeps what is written through it while the config is composed."""

    def __init__(self, stream):
        self.stream, self.text = stream, []

    def write(self, data):
        if not _STATE["composed"]:
            self.text.append(data)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def composition_error_line(text: str) -> str:
    """Hydra's message in one line: its first line and the `full_key:` line when there is one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Set the environment variable")]
    key = next((line for line in lines if line.startswith("full_key:")), None)
    return " ".join(filter(None, [lines[0] if lines else "", key and f"({key})"]))


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
_MULTIRUN_FLAGS = ("-m", "--multirun")
_CFG_FLAGS = ("-c", "--cfg")


def _is_sweep_axis(value: str) -> bool:
    """A command-line value Hydra's basic sweeper expands into several members (`a,b,c`), not a list or string."""
    return "," in value and not value.lstrip().startswith(("[", "{", "'", '"', "range(", "choice(", "glob("))


def sweep_grid(overrides: list[str], preset_params: dict) -> dict[str, list[str]]:
    """The members' axes: the preset's hydra.sweeper.params, each replaced by a command-line axis of the same key
    and joined by the command line's other axes (Hydra's basic sweeper: their cartesian product)."""
    grid = {key: [v.strip() for v in str(value).split(",")] for key, value in preset_params.items()}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and _is_sweep_axis(value):
            grid[key.lstrip("+~")] = [v.strip() for v in value.split(",")]
    return grid


def grid_members(grid: dict[str, list[str]]) -> int:
    return len(list(itertools.product(*grid.values()))) if grid else 1


def preset_sweep_params(overrides: list[str]) -> dict:
    """hydra.sweeper.params of the config these overrides compose (each sweep axis at its first value)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    first = [o if not _is_sweep_axis(o.partition("=")[2]) else o.split(",")[0] for o in overrides]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=first, return_hydra_config=True)
    return dict(cfg.hydra.sweeper.params or {})


def _sweep_preview_argv(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """`-m ... --cfg job`: Hydra refuses the pair, but a user previewing a sweep means "show me what the members
    compose to". Returns (argv for one composition with each axis at its first value, the overrides), or None."""
    if not (set(argv) & set(_MULTIRUN_FLAGS) and set(argv) & set(_CFG_FLAGS)):
        return None
    kept, overrides, skip_next = [], [], False
    for i, arg in enumerate(argv):
        if skip_next:
            kept.append(arg)
            skip_next = False
            continue
        if arg in _MULTIRUN_FLAGS:
            continue
        if arg in _CFG_FLAGS or arg in ("-p", "--package"):
            kept.append(arg)
            skip_next = True
            continue
        if not arg.startswith("-") and "=" in arg:
            overrides.append(arg)
            key, _, value = arg.partition("=")
            arg = f"{key}={value.split(',')[0]}" if _is_sweep_axis(value) else arg
        kept.append(arg)
    return kept, overrides


def print_sweep_summary(grid: dict[str, list[str]]) -> None:
    """After the first member's config: the sweep's axes and member count, as YAML comments."""
    print(f"# multirun: {grid_members(grid)} members (the config above is the first: each axis at its first value)")
    for key, values in grid.items():
        print(f"#   {key}: {', '.join(values)}")


HELP = """vbon_exp: best-of-N alignment experiments (BoN, vBoN, KL-RL, BoN-SFT, DPO, BoNBoN, BOND, ...).

usage: python -m vbon_exp [key=value ...] [group=option ...] [+experiment=<preset>] [-m] [--cfg job] [plan=true]

  python -m vbon_exp                                  one run of the default config (synthetic task, vBoN)
  python -m vbon_exp task=imdb objective=vbon         a run on IMDB
  python -m vbon_exp -m objective=vbon,kl_rl objective.beta=0.333,0.1   a sweep (then `make pareto-plot`)
  python -m vbon_exp +experiment=imdb_paper plan=true   what a preset will hold and take; nothing loads
  python -m vbon_exp --cfg job                        the composed config, nothing run

config groups (conf/<group>/<option>.yaml):
{groups}

Every key, its type, default and meaning: docs/config.md. Hydra's own help: --hydra-help."""


def config_groups(conf_dir: Path = CONF_DIR) -> str:
    """The config groups of conf/ and their options, one line each (read off the directory: no composition)."""
    lines = []
    for group in sorted(p for p in conf_dir.iterdir() if p.is_dir()):
        options = sorted(p.stem for p in group.glob("*.yaml"))
        lines.append(f"  {group.name:<11} {', '.join(options)}")
    return "\n".join(lines)


def run_hydra(hydra_main) -> None:
    """Call a @hydra.main function; a composition error exits with status 2 and one `vbon_exp: error:` line.
    `-m ... --cfg job` prints the first member's composed config and the sweep's axes (Hydra alone refuses it).
    `--help` is answered here, from conf/ alone (Hydra's lists every group of its ConfigStore: seconds)."""
    if sys.argv[1:] in (["--help"], ["-h"]):
        print(HELP.format(groups=config_groups()))
        return
    preview = _sweep_preview_argv(sys.argv[1:])
    grid = None
    if preview is not None:
        argv, overrides = preview
        try:
            params = preset_sweep_params(overrides)
        except Exception:  # noqa: BLE001 — a command line that does not compose: Hydra reports it below, exit 2
            params = {}
        grid = sweep_grid(overrides, params)
        given = {o.partition("=")[0].lstrip("+~") for o in overrides}
        # the first member: every preset axis at its first value too
        sys.argv = [sys.argv[0], *(f"{k}={v[0]}" for k, v in grid.items() if k not in given), *argv]
    _run_hydra_reporting_errors(hydra_main)
    if grid is not None:
        print_sweep_summary(grid)


def _run_hydra_reporting_errors(hydra_main) -> None:
    recorder = _STATE["recording"] = _RecordingStderr(sys.stderr)
    sys.stderr = recorder
    try:
        hydra_main()
    except SystemExit as stop:
        if stop.code == 1 and not _STATE["composed"]:
            sys.stderr = recorder.stream
            print(f"vbon_exp: error: {composition_error_line(''.join(recorder.text))} (the command line does not "
                  "fit the config; see above)", file=sys.stderr)
            sys.exit(2)
        raise
    finally:
        if sys.stderr is recorder:
            sys.stderr = recorder.stream
        _STATE["recording"] = None
