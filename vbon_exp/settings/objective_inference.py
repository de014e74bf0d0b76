"""conf/objective/bon_aware.yaml: objectives that train for a policy used with inference-time selection
(vbon_exp/objectives/bon_aware.py), listed in vbon_exp.settings.objective.OBJECTIVE_SETTINGS.

BoN-aware RL (Chow et al. 2024, "Inference-Aware Fine-Tuning for Best-of-N Sampling in Large Language Models",
arXiv:2412.15287; the max@k gradient estimator of Walder & Karkhanis 2025, "Pass@k Policy Optimization"): maximise
E[max of N′ rewards of π_θ] − β·KL(π_θ ‖ π_ref), the expected reward of best-of-N′ sampling from the trained
policy, N′ = `inference_n`. Its gradient estimator needs each prompt's whole group of samples, so it trains with
RLOO only (algo=rloo, algo.rloo_k ≥ N′ samples per prompt)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from vbon_exp.errors import ConfigError, check_number
from vbon_exp.settings.beta_n import BetaFirstConfig



@dataclass
class BoNAwareConfig(BetaFirstConfig):
    """conf/objective/bon_aware.yaml. β is the KL coefficient (set β; N = 1/β + 1 follows as the results column `n`,
    as for kl_rl); N′ = `inference_n` is the number of samples best-of-N′ draws at inference."""

    method_label: ClassVar[str] = "BoN-aware RL"  # the legend (declared, not a key)
    trains_with: ClassVar[Optional[str]] = "algo"  # its trainer node
    reward_transform: ClassVar[str] = "identity"  # the sequence reward each sample brings to its group: r(y)
    # the RL algorithms it trains with (check_run refuses the others): those that apply a group transform to each
    # prompt's k rewards (vbon_exp/trainers/rloo.py)
    algos: ClassVar[tuple[str, ...]] = ("rloo",)

    # Objective name (results column).
    name: str = "bon_aware"
    # N′ (integer ≥ 1, ≤ algo.rloo_k): the samples best-of-N′ draws from the trained policy at inference; training
    # maximises the expected reward of that choice, E[max of N′ rewards], minus β·KL(π_θ‖π_ref). N′ = 1 is
    # KL-regularised RL. Default 2: at the synthetic task's training scale N′ = 2 gets within 25% of π_ref's distance
    # to the exact optimum, N′ = 4 does not (its gradient noise leaves ~40%; docs/methods/bon_aware.md).
    inference_n: int = 2

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_number(f"{prefix}.inference_n", self.inference_n, integer=True, minimum=1)

    def cache_splits(self) -> tuple[str, ...]:
        return ()  # the reward is r itself: no reference CDF

    def variant(self) -> Optional[str]:
        return f"N′={self.inference_n}"

    def legend(self) -> str:
        return f"{self.method_label} (N′={self.inference_n})"

    def check_run(self, settings) -> None:
        """The max@N′ estimator needs each prompt's whole group of ≥ N′ samples: RLOO with algo.rloo_k ≥ N′."""
        algo = settings.algo
        if algo.name not in self.algos:
            raise ConfigError(
                f"algo.name={algo.name}: objective=bon_aware needs algo=rloo (its unbiased max@N′ gradient estimator "
                "turns each prompt's group of algo.rloo_k rewards into advantages; PPO samples one response per "
                "prompt, GRPO's and Dr.GRPO's group statistics would re-centre and rescale them)")
        if algo.rloo_k < self.inference_n:
            raise ConfigError(
                f"algo.rloo_k={algo.rloo_k} < objective.inference_n={self.inference_n}: objective=bon_aware needs at "
                "least N′ samples per prompt (the unbiased max@N′ estimator averages over N′-subsets of the group); "
                f"raise algo.rloo_k (keeping algo.batch_size divisible by it) or lower objective.inference_n")
