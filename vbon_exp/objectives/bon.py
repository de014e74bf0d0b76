"""`objective=bon`: best-of-N sampling from π_ref at inference time; nothing is trained."""

from __future__ import annotations

from vbon_exp.objectives.base import Objective, RunContext
from vbon_exp.policies import BoNPolicy, ModelPolicy


class BoNObjective(Objective):
    name = "bon"

    def fit(self, ctx: RunContext) -> BoNPolicy:
        reference = ModelPolicy(ctx.task.reference, ctx.task, ctx.sampling, ctx.cfg.eval.score_batch_size)
        return BoNPolicy(reference, int(self.n))

    def target_log_probs(self, oracle):
        return oracle.bon_log_probs(int(self.n))
