"""`objective=kl_rl`: the standard KL-regularised RL objective E[r(y)] − β·KL(π_θ ‖ π_ref), optimum
π* ∝ π_ref·exp(r/β) (Amini et al. 2025, §2)."""

from __future__ import annotations

from vbon_exp.objectives.base import RunContext
from vbon_exp.objectives.rl import RLObjective


class KLRLObjective(RLObjective):
    name = "kl_rl"

    def sequence_reward(self, ctx: RunContext):
        return lambda samples, logp_ref_seq: samples.rewards.double()

    def target_log_probs(self, oracle):
        return oracle.optimum_log_probs(float(self.beta))
