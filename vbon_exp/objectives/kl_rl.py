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
        return self.optimum_log_probs(oracle, float(self.beta))

    def optimum_log_probs(self, oracle, beta: float):
        """π* ∝ π_ref·exp(Φ/β), the optimum of E[Φ] − β·KL(π_θ ‖ π_ref) (§2), exact."""
        if self.transform == "identity":
            return oracle.optimum_log_probs(beta)
        return oracle.transform_optimum_log_probs(self.transform, beta, n=self.transform_n(), **self.transform_params())

    def record_exact(self, ctx, lm, beta: float) -> None:
        """`exact_kl_to_optimum`: KL(π_θ ‖ π*) at the β training ended at (β itself unless algo.target_kl moved it),
        at the sampling temperature, beside its value at π_ref (`exact_kl_to_optimum_init`): whether the trainer's
        KL choices (algo.kl_in, algo.kl_estimator, the algorithm) reach the KL-regularised optimum."""
        oracle = ctx.task.oracle
        if oracle is None:
            return
        optimum = self.optimum_log_probs(oracle, beta)
        ctx.extras["exact_kl_to_optimum"] = float(bon.kl(oracle.model_log_probs(lm), optimum).mean())
        ctx.extras["exact_kl_to_optimum_init"] = float(bon.kl(oracle.ref_log_probs, optimum).mean())

    def fit(self, ctx):
        policy = super().fit(ctx)
        ctx.extras["transform"] = self.transform  # a fact of the line; its identity is the settings' variant
        if self.transform == "exp_cdf":
            ctx.extras["transform_t"] = float(self.cfg.t)
        return policy
