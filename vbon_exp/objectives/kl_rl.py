"""`objective=kl_rl`: the standard KL-regularised RL objective E[Φ(y)] − β·KL(π_θ ‖ π_ref), optimum
π* ∝ π_ref·exp(Φ/β) (Amini et al. 2025, §2), with the sequence reward Φ a named transform of the reward
(`objective.transform`, vbon_exp.bon.REWARD_TRANSFORMS):
- identity: Φ = r(y), today's KL-RL;
- log_cdf:  Φ = log F̂_x(r(y)), vBoN's l1 reward: with β = 1/(N−1) this *is* objective=vbon bound=l1 (same code path);
- cdf:      Φ = F̂_x(r(y)), the calibrated reward (InfAlign, Balashankar et al. 2024);
- exp_cdf:  Φ = exp(t·F̂_x(r(y))), InfAlign's exponential transform (`objective.t`).
F̂ is the train prompts' reference cache, as vBoN's; the exact target on the synthetic task uses the exact F."""

from __future__ import annotations

from dataclasses import dataclass

from vbon_exp import bon
from vbon_exp.errors import check_choice, check_number
from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.rl_objective import BetaFirstConfig, RLObjective


@dataclass
class KLRLConfig(BetaFirstConfig):
    """conf/objective/kl_rl.yaml."""

    # Objective name (results column).
    name: str = "kl_rl"
    # The sequence reward Φ, a transform in vbon_exp.bon.REWARD_TRANSFORMS: identity (r) | log_cdf (log F̂) |
    # cdf (F̂) | exp_cdf (exp(t·F̂)); the F̂ transforms read the train prompts' reference cache.
    transform: str = "identity"
    # The exponent t of transform=exp_cdf (Φ = exp(t·F̂); t > 0 favours the top quantiles, InfAlign's best-of-N).
    t: float = 1.0

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_choice(f"{prefix}.transform", self.transform, sorted(bon.REWARD_TRANSFORMS))
        check_number(f"{prefix}.t", self.t)


@register_objective
class KLRLObjective(RLObjective):
    name = "kl_rl"
    label = "KL-regularised RL"
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
        ctx.extras["transform"] = self.transform  # results column: kl_rl runs with different Φ stay apart
        if self.transform == "exp_cdf":
            ctx.extras["transform_t"] = float(self.cfg.t)
        return policy
