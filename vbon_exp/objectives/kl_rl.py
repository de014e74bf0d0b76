"""`objective=kl_rl`: the standard KL-regularised RL objective E[Φ(y)] − β·KL(π_θ ‖ π_ref), optimum
π* ∝ π_ref·exp(Φ/β) (Amini et al. 2025, §2), with the sequence reward Φ a named transform of the reward
(`objective.transform`, vbon_exp.bon.REWARD_TRANSFORMS):
- identity: Φ = r(y), today's KL-RL;
- log_cdf:  Φ = log F̂_x(r(y)), vBoN's l1 reward: with β = 1/(N−1) this *is* objective=vbon bound=l1 (same code path);
- cdf:      Φ = F̂_x(r(y)), the calibrated reward (InfAlign, Balashankar et al. 2024);
- exp_cdf:  Φ = exp(t·F̂_x(r(y))), InfAlign's exponential transform (`objective.t`).
F̂ is the train prompts' reference cache, as vBoN's; the exact target on the synthetic task uses the exact F."""

from __future__ import annotations


from vbon_exp import bon
from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.rl_objective import RLObjective
from vbon_exp.settings.objective import KLRLConfig


@register_objective
class KLRLObjective(RLObjective):
    name = "kl_rl"
    config = KLRLConfig

    @property
    def transform(self) -> str:
        return self.cfg.transform

    def target_log_probs(self, oracle):
        if self.transform == "identity":
            return oracle.optimum_log_probs(float(self.beta))
        return oracle.transform_optimum_log_probs(self.transform, float(self.beta), n=self.transform_n(),
                                                  **self.transform_params())

    def fit(self, ctx):
        policy = super().fit(ctx)
        ctx.extras["transform"] = self.transform  # a fact of the line; its identity is the settings' variant
        if self.transform == "exp_cdf":
            ctx.extras["transform_t"] = float(self.cfg.t)
        return policy
