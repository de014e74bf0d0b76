"""Errors a user can fix from the message alone, shared by every layer. This module imports nothing of the package,
so any module may raise these without importing upward (the one-way data flow, pyproject's import-linter contract).

`vbon_exp.__main__` prints them as one `vbon_exp: error: ...` line, without a traceback, and exits with status 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and what is allowed."""


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message names the id/path and how to fix it."""


class RewardError(RuntimeError):
    """A reward model returned NaN or inf; the message names the model and the batch."""


class DataError(ValueError):
    """Task data is missing or malformed; the message names the file (and line) or dataset id."""


class SamplerBackendError(ImportError):
    """The selected sampler backend cannot be used here (e.g. vLLM is not installed); the message says why."""


# Shown as one line and exit status 2 (FileNotFoundError: a missing checkpoint for train.resume=true, a missing file).
USER_ERRORS = (ConfigError, ModelLoadError, RewardError, DataError, SamplerBackendError, FileNotFoundError)


# --------------------------------------------------------------------------- value checks
# Small helpers every config dataclass uses in its `check()`: each raises one ConfigError naming the full key.


def check_number(key: str, value, *, integer: bool = False, minimum=None, exclusive_min=None, maximum=None,
                 allow_none: bool = False):
    """`value` is a finite number (an integer with `integer`) within the bounds; returns it."""
    import math

    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be ≥ {minimum}, got {value!r}")
    if exclusive_min is not None and value <= exclusive_min:
        raise ConfigError(f"{key} must be > {exclusive_min}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be ≤ {maximum}, got {value!r}")
    return value


def check_choice(key: str, value, allowed):
    """`value` is one of `allowed`; returns it."""
    if value not in tuple(allowed):
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    return value
