"""`objective=vbon`: minimise KL(π_θ ‖ π_BoN) by RL with KL coefficient β = 1/(N−1) and a reward from the cached
reference CDF F̂ (Amini et al. 2025, §3):
- bound=l1:    log F̂_x(r(y))                                   (reward transform `log_cdf`);
- bound=exact: β·log Σ_{i=1..N} C(N,i) F̂^(N−i) π_ref(y)^(i−1)   (transform `exact`; = β·log π_BoN/π_ref with F̂)."""

from __future__ import annotations

import logging

from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.rl_objective import RLObjective
from vbon_exp.settings.objective import BOUNDS, VBoNConfig

log = logging.getLogger(__name__)


@register_objective
class VBoNObjective(RLObjective):
    name = "vbon"
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
