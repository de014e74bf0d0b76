"""Objectives optimised by on-policy RL with a per-token KL penalty β (conf/algo: PPO or RLOO). They differ in the
sequence reward, a named transform of the rollout (vbon_exp.bon.REWARD_TRANSFORMS), and may add loss terms, weight
the policy-gradient loss, or hand the trainer a moving anchor and per-update callbacks (`trainer_options`)."""

from __future__ import annotations

import logging
import math
from typing import Optional


from vbon_exp import bon
from vbon_exp.evaluation import ModelPolicy
from vbon_exp.objectives.base import Objective, RunContext, model_policy
from vbon_exp.objectives.training import record_training, save_policy, train_config, trainable_policy
from vbon_exp.trainers import ALGOS
from vbon_exp.settings.beta_n import BetaFirstConfig  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class RLObjective(Objective):
    # the sequence reward: a name in vbon_exp.bon.REWARD_TRANSFORMS
    transform: str = "identity"

    @property
    def n_exact(self) -> int:
        """The integer N of the exact bound's binomial sum: N itself, else ⌊1/β⌋ + 1 as in the seed code."""
        n = float(self.n)
        return int(round(n)) if math.isclose(n, round(n), rel_tol=1e-9) else int(1.0 / self.beta) + 1

    def transform_n(self) -> Optional[float]:
        """The N handed to the transform (the exact bound's binomial sum needs an integer)."""
        return self.n_exact if self.transform == "exact" else self.n

    def transform_params(self) -> dict:
        """The transform's settings besides N (vbon_exp.bon.TransformInputs), from the objective's config."""
        return {"exact_scale": getattr(self.cfg, "exact_scale", "beta"), "t": float(getattr(self.cfg, "t", 1.0))}

    def kl_coef(self) -> float:
        """The trainer's per-token KL coefficient: β."""
        return float(self.beta)

    def sequence_reward(self, ctx: RunContext):
        """(scored samples, log π_ref(y|x) [B]) -> the sequence reward [B] maximised with KL coefficient β."""
        fn = bon.REWARD_TRANSFORMS[self.transform]
        cache = ctx.caches.get("train")
        n = self.transform_n() if self.transform in bon.TRANSFORMS_NEEDING_CDF else self.n
        params = self.transform_params()

        def reward(samples, logp_ref_seq):
            log_f = cache.log_cdf_hat(samples.prompt_index, samples.rewards) if cache is not None else None
            return fn(bon.TransformInputs(samples.rewards, log_f, logp_ref_seq, n, **params))

        return reward

    def loss_terms(self, ctx: RunContext) -> list:
        """Extra terms of the RL loss, each `term(trainer, minibatch, log_dist) -> (loss, stats)` (none by default)."""
        return []

    def trainer_options(self, ctx: RunContext) -> dict:
        """More keyword arguments of the RL trainer (vbon_exp.trainers.on_policy.OnPolicyTrainer): `pg_coef`, `reference`,
        `update_callbacks`, `state_modules` (none by default: the trainer's own defaults)."""
        return {}

    def record_exact(self, ctx: RunContext, lm, beta: float) -> None:
        """Exact facts of the trained policy for the results line, on a task with an oracle (none by default);
        `beta`: the KL coefficient training ended at (the adaptive controller's last, else β)."""

    def prepare(self, ctx: RunContext, trainer) -> None:
        """Called with the built trainer just before it trains (e.g. to read its update count); nothing by default."""

    def fit(self, ctx: RunContext) -> ModelPolicy:
        algo = ctx.settings.algo
        policy = trainable_policy(ctx, algo.trainable_layers)
        trainer = ALGOS[algo.name](
            algo, train_config(ctx), policy=policy, task=ctx.task, sampling=ctx.sampling,
            sequence_reward=self.sequence_reward(ctx), kl_coef=self.kl_coef(), accelerator=ctx.accelerator,
            run_dir=ctx.run_dir, tracker=ctx.tracker, seed=ctx.settings.seed, loss_terms=self.loss_terms(ctx),
            **self.trainer_options(ctx),
        )
        self.prepare(ctx, trainer)
        lm = trainer.train()
        record_training(ctx, trainer)
        if trainer.kl_controller is not None:  # algo.target_kl: the β the controller ended at
            ctx.extras["final_kl_coef"] = float(trainer.kl_coef)
        self.record_exact(ctx, lm, float(trainer.kl_coef))
        save_policy(ctx, lm)
        return model_policy(ctx, lm)
