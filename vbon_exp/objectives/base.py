"""What an objective is: a way to turn (task, reference caches) into a policy, plus the distribution it targets.

An objective is two halves under one name: its settings in vbon_exp/settings/objective.py (the schema and defaults
of conf/objective/<name>.yaml, its `check`, and what it declares about itself: `method_label`, `trains_with`,
`cache_splits()`, `evaluation_caches(eval)`, `legend()`; torch-free, so validation and the plan read them without
loading a model), and its implementation here, a class registered with `@register_objective`:
- `config`: its settings dataclass (`label` and `trains_with` are copied from it at registration);
- `fit(ctx)`: the policy; `target_log_probs(oracle)`: its exact target on a task with an oracle;
- `loss_terms(ctx)` (RL objectives): extra loss terms the RL trainer adds to its policy-gradient loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from vbon_exp.errors import ConfigError
from vbon_exp.evaluation import ModelPolicy
from vbon_exp.sampling import SamplingConfig
from vbon_exp.settings.beta_n import ObjectiveConfig  # noqa: F401  (re-exported)
from vbon_exp.settings.objective import OBJECTIVE_SETTINGS


@dataclass
class RunContext:
    """Everything an objective may use; built by `vbon_exp.run` in data-flow order."""

    settings: Any  # vbon_exp.settings.run.RunSettings: the validated run, the only config an objective reads
    task: Any  # vbon_exp.tasks.Task
    device: torch.device
    run_dir: Path
    sampling: SamplingConfig
    tracker: Any  # vbon_exp.tracking.Tracker
    accelerator: Any = None  # accelerate.Accelerator (one process unless started with `accelerate launch`)
    caches: dict[str, Any] = field(default_factory=dict)  # split -> ReferenceCache
    extras: dict[str, Any] = field(default_factory=dict)  # objective facts for the results line


def model_policy(ctx: RunContext, model) -> ModelPolicy:
    """`model` as a policy of the run: sampled with its sampling settings, scored and measured in its batch sizes."""
    return ModelPolicy(model, ctx.task, ctx.sampling, ctx.settings.eval.score_batch_size,
                       ctx.settings.train.logits_chunk)


class Objective:
    name: ClassVar[str] = "?"
    config: ClassVar[type] = ObjectiveConfig
    # copied from `config` by @register_objective (declared there, once)
    label: ClassVar[str] = "?"
    trains_with: ClassVar[Optional[str]] = None

    def __init__(self, cfg):
        self.cfg = cfg
        self.beta, self.n = cfg.beta, cfg.n

    def legend(self) -> str:
        """The legend label of this run's points (results column `objective_label`)."""
        return self.cfg.legend()

    @property
    def cache_splits(self) -> tuple[str, ...]:
        """The reference reward caches its training reads (declared by its settings)."""
        return self.cfg.cache_splits()

    def evaluation_caches(self, eval_settings) -> dict[str, int]:
        """The extra evaluation caches of the test prompts its policy reads, name -> M (declared by its settings)."""
        return self.cfg.evaluation_caches(eval_settings)

    def check_task(self, task) -> None:
        """Checks that need the built task (its tokenizer, its models), run before any cache is built: one
        ConfigError naming the key (none by default)."""

    def fit(self, ctx: RunContext):
        """Return a policy (vbon_exp.evaluation.EvaluatedPolicy) trained or assembled for this objective."""
        raise NotImplementedError

    def target_log_probs(self, oracle) -> torch.Tensor:
        """Exact log-probs of the distribution this objective aims at, on a task with an oracle."""
        raise NotImplementedError

    def bon_target_n(self) -> Optional[float]:
        """N when this objective's target is π_BoN at N (so its results line carries π_BoN's KL bound and win rate
        as the point it should reach, on any task); None when it aims elsewhere (KL-RL, DPO)."""
        return None


# name -> objective class; filled by @register_objective as vbon_exp.objectives imports its modules
OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    if cls.name in OBJECTIVES and OBJECTIVES[cls.name] is not cls:
        raise ConfigError(f"two objectives are named {cls.name!r}: {OBJECTIVES[cls.name]} and {cls}")
    if OBJECTIVE_SETTINGS.get(cls.name) is not cls.config:
        raise ConfigError(f"objective {cls.name!r}: its config {cls.config.__name__} is not "
                          f"vbon_exp.settings.objective.OBJECTIVE_SETTINGS[{cls.name!r}]")
    cls.label, cls.trains_with = cls.config.method_label, cls.config.trains_with
    OBJECTIVES[cls.name] = cls
    return cls
