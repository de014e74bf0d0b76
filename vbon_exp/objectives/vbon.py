"""`objective=vbon`: minimise KL(π_θ ‖ π_BoN) by RL with KL coefficient β = 1/(N−1) and a reward from the cached
reference CDF F̂ (Amini et al. 2025, §3):
- bound=l1:    log F̂_x(r(y));
- bound=exact: β·log Σ_{i=1..N} C(N,i) F̂^(N−i) π_ref(y)^(i−1)  (= β·log π_BoN/π_ref with F̂ plugged in)."""

from __future__ import annotations

import logging
import math

from vbon_exp import bon
from vbon_exp.objectives.base import RunContext
from vbon_exp.objectives.rl import RLObjective

log = logging.getLogger(__name__)


class VBoNObjective(RLObjective):
    name = "vbon"
    cache_splits = ("train",)

    def __init__(self, beta, n, bound: str = "l1", exact_scale: str = "beta", **_):
        super().__init__(beta, n)
        self.bound, self.exact_scale = bound, exact_scale

    @property
    def n_exact(self) -> int:
        """The integer N of the exact bound's binomial sum: N itself, else ⌊1/β⌋ + 1 as in the seed code."""
        n = float(self.n)
        return int(round(n)) if math.isclose(n, round(n), rel_tol=1e-9) else int(1.0 / self.beta) + 1

    def sequence_reward(self, ctx: RunContext):
        cache = ctx.caches["train"]
        if self.bound == "exact" and self.n_exact != float(self.n):
            log.warning("objective.bound=exact: N = 1/β + 1 = %.4g is not an integer; using N = %d (⌊1/β⌋ + 1, "
                        "the seed code's rule)", float(self.n), self.n_exact)

        def reward(samples, logp_ref_seq):
            log_f = cache.log_cdf_hat(samples.prompt_index, samples.rewards)
            if self.bound == "l1":
                return bon.vbon_reward_l1(log_f)
            return bon.vbon_reward_exact(log_f, logp_ref_seq.cpu(), self.n_exact, self.exact_scale)

        return reward

    def target_log_probs(self, oracle):
        return oracle.bon_log_probs(float(self.n))
