"""What an objective is: a way to turn (task, reference caches) into a policy, plus the distribution it targets.

An objective is one module in this package: a config dataclass (the schema and defaults of
conf/objective/<name>.yaml, with its own `check`), and a class registered with `@register_objective` that declares
what the rest of the run needs to know about it, so run.py, validation and the results line read declarations
rather than name lists:
- `config`: its config dataclass;
- `label`: the legend name (results column `objective_label`, read by `make pareto-plot`);
- `cache_splits`: reference reward caches its training reads ("train": the train prompts' F̂);
- `evaluation_caches(eval settings)`: the extra evaluation caches of the test prompts its policy reads, name -> M
  (BoN from the pool: "bon_pool"), built with the test cache and counted by the memory pre-flight;
- `trains_with`: the trainer node it reads: `algo` (conf/algo, the RL trainers; then `algo` is a results column),
  `sft` (the supervised loop), or None (nothing trained); that node's values are checked only then;
- `fit(ctx)`: the policy; `target_log_probs(oracle)`: its exact target on a task with an oracle;
- `loss_terms(ctx)` (RL objectives): extra loss terms the RL trainer adds to its policy-gradient loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import torch
from omegaconf import DictConfig

from vbon_exp.errors import ConfigError, check_number
from vbon_exp.evaluation import ModelPolicy
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


def model_policy(ctx: RunContext, model) -> ModelPolicy:
    """`model` as a policy of the run: sampled with its sampling settings, scored and measured in its batch sizes."""
    return ModelPolicy(model, ctx.task, ctx.sampling, ctx.cfg.eval.score_batch_size, ctx.cfg.train.logits_chunk)


@dataclass
class ObjectiveConfig:
    """What every objective node has: its name and the (β, N) pair that places it on the shared β axis (N = 1/β + 1).
    Each objective's YAML sets one of the two and derives the other (conf/objective/*.yaml)."""

    # Objective name (results column; vbon_exp.objectives.OBJECTIVES).
    name: str = "?"
    # KL coefficient β (> 0), or derived from N.
    beta: Optional[float] = None
    # The BoN sample count N = 1/β + 1, or derived from β.
    n: Optional[Union[int, float]] = None

    def check(self, prefix: str = "objective") -> None:
        check_number(f"{prefix}.beta", self.beta, exclusive_min=0, allow_none=True)
        check_number(f"{prefix}.n", self.n, minimum=1, allow_none=True)

    def needs_whole_n(self) -> bool:
        """Whether this objective reads N as a whole number (BoN's sample count, a pair's size, the exact bound's
        binomial sum): then a β within a relative 1e-4 of 1/(N − 1) is taken as that N (vbon_exp.bon.whole_n,
        applied by vbon_exp.config.validate)."""
        return False


class Objective:
    name: ClassVar[str] = "?"
    label: ClassVar[str] = "?"
    config: ClassVar[type] = ObjectiveConfig
    cache_splits: ClassVar[tuple[str, ...]] = ()
    trains_with: ClassVar[Optional[str]] = None

    def __init__(self, cfg):
        self.cfg = cfg
        self.beta, self.n = cfg.beta, cfg.n

    def legend(self) -> str:
        """The legend label of this run's points (results column `objective_label`): the objective's by default."""
        return self.label

    def check_task(self, task) -> None:
        """Checks that need the built task (its tokenizer, its models), run before any cache is built: one
        ConfigError naming the key (none by default)."""

    def fit(self, ctx: RunContext):
        """Return a policy (vbon_exp.evaluation.EvaluatedPolicy) trained or assembled for this objective."""
        raise NotImplementedError

    def target_log_probs(self, oracle) -> torch.Tensor:
        """Exact log-probs of the distribution this objective aims at, on a task with an oracle."""
        raise NotImplementedError

    def evaluation_caches(self, eval_settings) -> dict[str, int]:
        """The extra evaluation caches of the test prompts its policy reads, name -> M (none by default)."""
        return {}

    def bon_target_n(self) -> Optional[float]:
        """N when this objective's target is π_BoN at N (so its results line carries π_BoN's KL bound and win rate
        as the point it should reach, on any task); None when it aims elsewhere (KL-RL, DPO)."""
        return None


# name -> objective class; filled by @register_objective as vbon_exp.objectives imports its modules
OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    if cls.name in OBJECTIVES and OBJECTIVES[cls.name] is not cls:
        raise ConfigError(f"two objectives are named {cls.name!r}: {OBJECTIVES[cls.name]} and {cls}")
    OBJECTIVES[cls.name] = cls
    return cls
