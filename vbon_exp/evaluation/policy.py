"""What the evaluator measures: a policy that evaluates itself behind one interface.

Every policy kind — a trained model, an external model, BoN by sampling, BoN from a pool, the inference-time
relatives of BoN — is an `EvaluatedPolicy`: it names the extra reference caches of the test prompts its evaluation
reads (`eval_caches`), gives itself at another evaluation temperature (`at_temperature`) and measures itself
(`evaluate`) into one or more points: a results line's metrics and the rows of the samples it drew. The run's
orchestration (vbon_exp/evaluation/runner.py) never asks which kind it holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pandas as pd


@dataclass
class EvalContext:
    """What evaluating a policy at one evaluation temperature may read."""

    task: Any  # the task; its oracle (where it has one) describes π_ref at this temperature
    caches: dict[str, Any]  # name -> reference cache of the test prompts at this temperature: "test" and eval_caches
    settings: Any  # the `eval:` node (vbon_exp.evaluation.runner.EvalConfig)
    seed: int  # the evaluation's draws and bootstrap derive from it
    eval_temperature: float
    judges: dict = field(default_factory=dict)  # name -> (reward, the test prompts' cache scored by that reward)
    # whether this is the temperature the objective's target is defined at (the sampling temperature it trained at)
    with_target: bool = True
    # oracle -> the objective's exact target's log-probs (or None where it has none); None when not `with_target`
    target_log_probs: Optional[Callable[[Any], Any]] = None

    @property
    def test_cache(self):
        return self.caches["test"]


@dataclass
class PolicyPoint:
    """One evaluation point of a policy: the metrics of a results line and the rows of the samples behind them (None
    where nothing was sampled, e.g. BoN estimated from a pool)."""

    metrics: dict
    samples: Optional[pd.DataFrame] = None


class EvaluatedPolicy:
    """The interface every policy kind implements (see the module docstring)."""

    @classmethod
    def eval_caches(cls, settings) -> dict[str, int]:
        """Extra reference caches of the test prompts the evaluation reads, name -> samples per prompt (M); each is
        its own cache (its name is part of the key), disjoint from the "test" cache. None by default."""
        return {}

    def at_temperature(self, temperature: float) -> "EvaluatedPolicy":
        """This policy sampled, and measured, at `temperature`."""
        raise NotImplementedError

    def evaluate(self, ctx: EvalContext) -> list[PolicyPoint]:
        """Measure the policy on the test prompts: one point or more (BoN from a pool: one per N)."""
        raise NotImplementedError
