"""Objectives optimised by on-policy RL with a per-token KL penalty β: they differ only in the sequence reward."""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from vbon_exp.modeling import load_causal_lm
from vbon_exp.objectives.base import Objective, RunContext
from vbon_exp.policies import ModelPolicy
from vbon_exp.trainers import ALGOS, RLConfig, TrainConfig

log = logging.getLogger(__name__)


def save_policy(ctx: RunContext, lm) -> None:
    """The trained policy, loadable with from_pretrained (safetensors)."""
    if ctx.accelerator.is_main_process:
        out = ctx.run_dir / "policy"
        lm.save_pretrained(out)
        ctx.task.tokenizer.save_pretrained(out)
        log.info("saved the trained policy to %s", out)
    ctx.accelerator.wait_for_everyone()


class RLObjective(Objective):
    def sequence_reward(self, ctx: RunContext):
        """(scored samples, log π_ref(y|x) [B]) -> the sequence reward [B] maximised with KL coefficient β."""
        raise NotImplementedError

    def fit(self, ctx: RunContext) -> ModelPolicy:
        algo = RLConfig.from_dict(OmegaConf.to_container(ctx.cfg.algo, resolve=True))
        train = TrainConfig(**OmegaConf.to_container(ctx.cfg.train, resolve=True))
        policy = load_causal_lm(ctx.task.policy_init, ctx.device)
        trainer = ALGOS[algo.name](
            algo, train, policy=policy, task=ctx.task, sampling=ctx.sampling,
            sequence_reward=self.sequence_reward(ctx), kl_coef=float(self.beta), accelerator=ctx.accelerator,
            run_dir=ctx.run_dir, tracker=ctx.tracker, seed=ctx.cfg.seed,
        )
        lm = trainer.train()
        ctx.extras["param_checksums"] = trainer.checksums
        save_policy(ctx, lm)
        return ModelPolicy(lm, ctx.task, ctx.sampling, ctx.cfg.eval.score_batch_size)
