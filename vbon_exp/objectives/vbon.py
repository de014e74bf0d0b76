"""`objective=vbon`: minimise KL(π_θ ‖ π_BoN) by RL with KL coefficient β = 1/(N−1) and a reward from the cached
reference CDF F̂ (Amini et al. 2025, §3):
- bound=l1:    log F̂_x(r(y))                                   (reward transform `log_cdf`);
- bound=exact: β·log Σ_{i=1..N} C(N,i) F̂^(N−i) π_ref(y)^(i−1)   (transform `exact`; = β·log π_BoN/π_ref with F̂)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vbon_exp.errors import check_choice
from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.rl_objective import BetaFirstConfig, RLObjective

log = logging.getLogger(__name__)

# objective.bound -> the reward transform of vbon_exp.bon.REWARD_TRANSFORMS
BOUNDS = {"l1": "log_cdf", "exact": "exact"}


@dataclass
class VBoNConfig(BetaFirstConfig):
    """conf/objective/vbon.yaml."""

    # Objective name (results column).
    name: str = "vbon"
    # Which bound: l1 (log F̂, the paper's experiments) | exact (β·log π_BoN/π_ref with F̂ plugged in).
    bound: str = "l1"
    # Scale of the exact bound: beta (1/(N−1), optimum π_BoN) | seed (1/N, as the seed code; optimum differs).
    exact_scale: str = "beta"

    def needs_whole_n(self) -> bool:
        return self.bound == "exact"  # the binomial sum runs to N; the l1 bound takes any β

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_choice(f"{prefix}.bound", self.bound, BOUNDS)
        check_choice(f"{prefix}.exact_scale", self.exact_scale, ("beta", "seed"))


@register_objective
class VBoNObjective(RLObjective):
    name = "vbon"
    label = "vBoN"
    config = VBoNConfig

    @property
    def transform(self) -> str:
        return BOUNDS[self.cfg.bound]

    def transform_n(self) -> float:
        if self.cfg.bound == "exact" and self.n_exact != float(self.n):
            log.warning("objective.bound=exact: N = 1/β + 1 = %.4g is not an integer; using N = %d (⌊1/β⌋ + 1, "
                        "the seed code's rule)", float(self.n), self.n_exact)
        return self.n_exact

    def bon_target_n(self) -> float:
        return float(self.n)

    def target_log_probs(self, oracle):
        return oracle.bon_log_probs(float(self.n))
