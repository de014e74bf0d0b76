"""What DPO, IPO and BoNBoN share: offline preference optimisation on (best, worst)-of-n pairs of reference samples.

For each train prompt, `pairs_per_prompt` groups of n samples from π_ref (the task's sampling settings), scored by
the task's reward, each giving the pair (best, worst) (ties broken by the seed); the samples come from the
content-keyed pair sample cache (vbon_exp/pairs.py), shared by every run with the same key, so a β sweep samples
once. The objective's loss (vbon_exp/preference_losses.py) is then minimised by vbon_exp/trainers/preference_loop.py. Each
objective module holds its config dataclass (every key of its YAML, typed, with the default) and its `check()`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import OmegaConf

from vbon_exp import bon
from vbon_exp.errors import ConfigError
from vbon_exp.evaluation import ModelPolicy
from vbon_exp.objectives.base import Objective, ObjectiveConfig, RunContext, model_policy
from vbon_exp.objectives.training import record_training, save_policy, train_config, trainable_policy
from vbon_exp.pairs import build_sample_table, make_pairs
from vbon_exp.trainers.preference_loop import PairLoss, PreferenceTrainer


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(value) -> int | None:
    """The integer a float such as 1/(1/15) + 1 = 15.999… stands for (within 1e-9), else None."""
    if not _is_number(value) or abs(value - round(value)) > 1e-9 * max(1.0, abs(value)):
        return None
    return int(round(value))


@dataclass
class PreferenceConfig(ObjectiveConfig):
    """What every preference objective's node has besides name, β and N (conf/objective/{dpo,ipo,bonbon}.yaml);
    the loop's settings, pairs per prompt included, are the shared `preference:` node."""

    @property
    def pair_size(self) -> int:
        """n: samples per pair."""
        return whole(self.n)

    def needs_whole_n(self) -> bool:
        return True  # N samples per pair

    def check(self, prefix: str = "objective") -> None:
        """Raise ConfigError naming `objective.<key>` for the first bad value."""
        super().check(prefix)
        if not _is_number(self.beta) or self.beta <= 0:
            raise ConfigError(f"{prefix}.beta must be a number > 0 for objective={self.name}, got {self.beta!r}")
        self._check_pair_size(prefix)

    def _check_pair_size(self, prefix: str = "objective") -> None:
        n = whole(self.n)
        if n is None or n < 2:
            raise ConfigError(
                f"{prefix}.n must be a whole number ≥ 2 for objective={self.name} (the samples per pair; "
                f"N = 1/β + 1, so β = 1/(N − 1): 1, 1/3, 1/7, ...), got {self.n!r} ({prefix}.beta={self.beta!r})")


class PreferenceObjective(Objective):
    """Subclasses set `config`, `name`, `label` and `pair_loss()`, and register themselves."""

    trains_with = "preference"  # the `preference:` node (vbon_exp/trainers/preference_loop.py)
    # the pair samples come from their own cache (vbon_exp/pairs.py); the evaluator's test cache is always built
    cache_splits: tuple[str, ...] = ()

    def __init__(self, cfg: PreferenceConfig):
        super().__init__(cfg)
        self._target = None

    def pair_loss(self) -> PairLoss:
        raise NotImplementedError

    def pairs(self, ctx: RunContext):
        """The (best, worst) pairs of this run, from the pair sample cache (built by the main process first)."""
        task, settings = ctx.task, OmegaConf.to_object(ctx.cfg.preference)
        n = self.cfg.pair_size
        with ctx.accelerator.main_process_first():
            table = build_sample_table(
                reference=task.reference, reward=task.reward, prompts=task.train_prompts,
                count=n * settings.pairs_per_prompt, sampling=ctx.sampling, seed=ctx.cfg.seed,
                cache_dir=ctx.cfg.reference.cache_dir,
                key_parts={"reference": task.fingerprint["reference"], "reward": task.fingerprint["reward"],
                           "prompts": task.fingerprint["train_prompts"]},
                eos_id=task.eos_id, pad_id=task.pad_id, chunk_prompts=ctx.cfg.reference.chunk_prompts,
                score_batch_size=ctx.cfg.eval.score_batch_size, desc="pair samples (train)",
            )
        pairs = make_pairs(table, task.train_prompts, n, settings.pairs_per_prompt, seed=ctx.cfg.seed, pad_id=task.pad_id,
                           prompt_text=lambda i: task.prompt_text("train", i), reward_name=task.reward.name)
        ctx.extras.update(pair_n=n, pairs=len(pairs), pairs_dropped_tied=pairs.dropped, pair_cache=str(table.path))
        return pairs

    def fit(self, ctx: RunContext) -> ModelPolicy:
        pairs = self.pairs(ctx)
        train, settings = train_config(ctx), OmegaConf.to_object(ctx.cfg.preference)
        policy = trainable_policy(ctx, settings.trainable_layers)
        trainer = PreferenceTrainer(
            settings, train, policy=policy, reference=ctx.task.reference, pairs=pairs,
            loss=self.pair_loss(), temperature=ctx.sampling.temperature, accelerator=ctx.accelerator,
            run_dir=ctx.run_dir, tracker=ctx.tracker, seed=ctx.cfg.seed, logp_batch_size=ctx.cfg.eval.batch_size,
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
