"""What an objective is: a way to turn (task, reference caches) into a policy, plus the distribution it targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from vbon_exp.sampling import SamplingConfig


@dataclass
class RunContext:
    """Everything an objective may use; built by `vbon_exp.run` in data-flow order."""

    cfg: DictConfig
    task: Any  # vbon_exp.tasks.Task
    device: torch.device
    run_dir: Path
    sampling: SamplingConfig
    tracker: Any  # vbon_exp.tracking.Tracker
    accelerator: Any = None  # accelerate.Accelerator (one process unless started with `accelerate launch`)
    caches: dict[str, Any] = field(default_factory=dict)  # split -> ReferenceCache
    extras: dict[str, Any] = field(default_factory=dict)  # objective facts for the results line


class Objective:
    name: str = "?"
    # reference caches the objective reads (the evaluator always needs "test")
    cache_splits: tuple[str, ...] = ()

    def __init__(self, beta: float | None, n: float | None, **_):
        self.beta, self.n = beta, n

    def fit(self, ctx: RunContext):
        """Return a policy (vbon_exp.policies) trained or assembled for this objective."""
        raise NotImplementedError

    def target_log_probs(self, oracle) -> torch.Tensor:
        """Exact log-probs of the distribution this objective aims at, on a task with an oracle."""
        raise NotImplementedError
