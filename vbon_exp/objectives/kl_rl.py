"""`objective=kl_rl`: the standard KL-regularised RL objective E[r(y)] − β·KL(π_θ ‖ π_ref), optimum
π* ∝ π_ref·exp(r/β) (Amini et al. 2025, §2)."""

from __future__ import annotations

from dataclasses import dataclass

from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.rl import BetaFirstConfig, RLObjective


@dataclass
class KLRLConfig(BetaFirstConfig):
    """conf/objective/kl_rl.yaml."""

    # Objective name (results column).
    name: str = "kl_rl"


@register_objective
class KLRLObjective(RLObjective):
    name = "kl_rl"
    label = "KL-regularised RL"
    config = KLRLConfig
    transform = "identity"

    def target_log_probs(self, oracle):
        return oracle.optimum_log_probs(float(self.beta))
