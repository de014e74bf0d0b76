"""What happens around Hydra's main (`python -m vbon_exp`): a command line that does not fit the config becomes
exit status 2 and one `vbon_exp: error:` line, like every other bad input.

Hydra reports such a command line (an unknown key, a wrong type, a missing option) itself and exits with status 1
before any run starts. A Hydra callback (`hydra.callbacks.composed` in conf/config.yaml) marks the moment the
config has been composed; an exit with status 1 before that moment is a composition error. Its message (Hydra's,
which names the key) is kept from stderr and repeated on the one error line. This module imports nothing of the
package, so functions pickled for a parallel sweep (hydra/launcher=joblib) reference it by name."""

from __future__ import annotations

import sys

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


def run_hydra(hydra_main) -> None:
    """Call a @hydra.main function; a composition error exits with status 2 and one `vbon_exp: error:` line."""
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
