"""`objective=bon`: best-of-N sampling from π_ref at inference time; nothing is trained.

Two estimates of BoN's point (`objective.estimate`): `cache` (default) reads a pool of M_eval cached π_ref samples per
test prompt (`eval.bon_pool_m`, its own cache) and gives every N ≤ M_eval at once, unbiased U-statistics for reward
and win rate and the tie-aware KL (vbon_exp/evaluation/bon_pool.py), with no sampling; `objective.n=all` writes
one results line per N = 1, 2, 4, … ≤ M_eval/4. `sample` draws N·eval.samples_per_prompt fresh π_ref samples per
prompt and keeps the best of each N (vbon_exp.evaluation.BoNPolicy): a check of the cache estimate, one N per run."""

from __future__ import annotations


from vbon_exp.evaluation import BoNPolicy, PooledBoN
from vbon_exp.objectives.base import Objective, RunContext, model_policy, register_objective
from vbon_exp.settings.beta_n import NFirstConfig, PoolNConfig  # noqa: F401  (re-exported)
from vbon_exp.settings.objective import BoNConfig


@register_objective
class BoNObjective(Objective):
    name = "bon"
    config = BoNConfig

    def fit(self, ctx: RunContext) -> BoNPolicy | PooledBoN:
        ctx.extras["estimate"] = self.cfg.estimate
        if self.cfg.estimate == "cache":
            return PooledBoN(self.cfg.ns(ctx.settings.eval.bon_pool_m))
        reference = model_policy(ctx, ctx.task.reference)
        return BoNPolicy(reference, int(self.n))

    def bon_target_n(self) -> float | None:
        """N; with n=all each line's own N (run.evaluate_pool_points), so none for the run."""
        return None if self.n == "all" else float(self.n)

    def target_log_probs(self, oracle):
        if self.n == "all":
            raise ValueError("objective.n=all has one target per N: PooledBoN.exact_log_probs(oracle, n)")
        return oracle.bon_log_probs(int(self.n))
