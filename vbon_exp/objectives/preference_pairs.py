"""What DPO, IPO and BoNBoN share: offline preference optimisation on (best, worst)-of-n pairs of reference samples.

For each train prompt, `pairs_per_prompt` groups of n samples from π_ref (the task's sampling settings), scored by
the task's reward, each giving the pair (best, worst) (ties broken by the seed); the samples come from the
content-keyed pair sample cache (vbon_exp/pairs.py), shared by every run with the same key, so a β sweep samples
once. The objective's loss (vbon_exp/preference_losses.py) is then minimised by vbon_exp/trainers/preference_loop.py. Each
objective module holds its config dataclass (every key of its YAML, typed, with the default) and its `check()`."""

from __future__ import annotations

from dataclasses import dataclass


from vbon_exp import bon
from vbon_exp.evaluation import ModelPolicy
from vbon_exp.objectives.base import Objective, RunContext, model_policy
from vbon_exp.objectives.training import record_training, save_policy, train_config, trainable_policy
from vbon_exp.pairs import build_sample_table, make_pairs
from vbon_exp.trainers.preference_loop import PairLoss, PreferenceTrainer
from vbon_exp.settings.objective_pairs import PreferenceConfig


class PreferenceObjective(Objective):
    """Subclasses set `config`, `name` and `pair_loss()`, and register themselves."""

    # the pair samples come from their own cache (vbon_exp/pairs.py); the evaluator's test cache is always built

    def __init__(self, cfg: PreferenceConfig):
        super().__init__(cfg)
        self._target = None

    def pair_loss(self) -> PairLoss:
        raise NotImplementedError

    def pairs(self, ctx: RunContext):
        """The (best, worst) pairs of this run, from the pair sample cache (built by the main process first)."""
        task, settings = ctx.task, ctx.settings.preference
        n = self.cfg.pair_size
        with ctx.accelerator.main_process_first():
            table = build_sample_table(
                reference=task.reference, reward=task.reward, prompts=task.train_prompts,
                count=n * settings.pairs_per_prompt, sampling=ctx.sampling, seed=ctx.settings.seed,
                cache_dir=ctx.settings.reference.cache_dir,
                key_parts={"reference": task.fingerprint["reference"], "reward": task.fingerprint["reward"],
                           "prompts": task.fingerprint["train_prompts"]},
                eos_id=task.eos_id, pad_id=task.pad_id, chunk_prompts=ctx.settings.reference.chunk_prompts,
                score_batch_size=ctx.settings.eval.score_batch_size, desc="pair samples (train)",
            )
        pairs = make_pairs(table, task.train_prompts, n, settings.pairs_per_prompt, seed=ctx.settings.seed, pad_id=task.pad_id,
                           prompt_text=lambda i: task.prompt_text("train", i), reward_name=task.reward.name)
        ctx.extras.update(pair_n=n, pairs=len(pairs), pairs_dropped_tied=pairs.dropped, pair_cache=str(table.path))
        return pairs

    def fit(self, ctx: RunContext) -> ModelPolicy:
        pairs = self.pairs(ctx)
        train, settings = train_config(ctx), ctx.settings.preference
        policy = trainable_policy(ctx, settings.trainable_layers)
        trainer = PreferenceTrainer(
            settings, train, policy=policy, reference=ctx.task.reference, pairs=pairs,
            loss=self.pair_loss(), temperature=ctx.sampling.temperature, accelerator=ctx.accelerator,
            run_dir=ctx.run_dir, tracker=ctx.tracker, seed=ctx.settings.seed, logp_batch_size=ctx.settings.eval.batch_size,
            name=self.name,
        )
        lm = trainer.train()
        record_training(ctx, trainer)
        oracle = ctx.task.oracle
        if oracle is not None:  # beside exact_kl_to_target: how far the policy is from π_BoN at the pair size
            target = oracle.bon_log_probs(self.cfg.pair_size)
            ctx.extras["exact_kl_to_bon"] = float(bon.kl(oracle.model_log_probs(lm), target).mean())
            ctx.extras["exact_kl_to_bon_init"] = float(bon.kl(oracle.ref_log_probs, target).mean())
        save_policy(ctx, lm)
        return model_policy(ctx, lm)
