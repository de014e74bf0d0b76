"""On-policy RL for causal LMs with a KL to π_ref: what PPO, RLOO, GRPO and Dr.GRPO share.

One update: sample a batch of responses from the policy, score them, compute per-token log-probs under the policy
(old) and the frozen reference, turn the objective's sequence reward (and, with `algo.kl_in=reward`, the per-token
KL penalty) into advantages (the subclass's job: GAE for PPO, leave-one-out for RLOO, the group's statistics for
GRPO), then a few epochs of clipped policy-gradient steps over minibatches; with `algo.kl_in=loss` the KL estimate
is a term of that loss instead. `algo.kl_estimator` picks the per-token estimator (vbon_exp/kl.py) either way, and
`algo.target_kl` makes β adaptive (Ziegler et al. 2019). Padding after EOS is masked out of every loss, advantage
and KL.

Every random draw of update u comes from generators seeded by (seed, u, rank, purpose), so a resumed run repeats
an uninterrupted one exactly."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vbon_exp import kl
from vbon_exp.logprobs import TokenStats
from vbon_exp.modeling import Samples
from vbon_exp.rewards import RewardError, score_samples
from vbon_exp.sampling import SamplingConfig, sample_responses
from vbon_exp.trainers.loop import TrainingLoop
from vbon_exp.trainers.rollout import PolicyWithValue, Rollout, masked_mean
from vbon_exp.trainers.shared import TrainConfig, derived_seed, freeze_lower_layers
from vbon_exp.trainers.trainable import enable_activation_checkpointing, freezes_base
from vbon_exp.settings.algo import RLConfig  # noqa: F401  (its settings; re-exported)

log = logging.getLogger(__name__)


SequenceReward = Callable[[Samples, torch.Tensor], torch.Tensor]  # (scored samples, log π_ref(y|x)) -> [B]
# Called after every update (trainer.step already counts it) before that update is logged and checkpointed; may
# return stats to log (e.g. iterative BOND refreshes its anchor and logs the round).
UpdateCallback = Callable[["OnPolicyTrainer"], dict | None]
# An objective's extra loss term: (trainer, minibatch, the minibatch's TokenStats with grad) -> (loss, stats). The
# trainer adds it to the clipped policy-gradient (+ value) loss of every minibatch (e.g. BOND's forward-KL term). A
# term with `needs_reference_kl = True` gets the stats' full-vocabulary KL to π_ref (`stats.kl`), computed in the
# policy's chunked pass.
LossTerm = Callable[["OnPolicyTrainer", "Rollout", TokenStats], tuple[torch.Tensor, dict]]
# An objective's group transform: [G, k] sequence rewards, one row per prompt's group -> [G, k] advantages, each
# already baselined by a value that does not depend on its own sample (e.g. BoN-aware RL's max@N′ estimator,
# vbon_exp/objectives/bon_aware.py). A trainer with `applies_group_transform` adds it to its own advantages of the
# KL penalty alone: a second baseline over these values would depend on each sample and bias the gradient.
GroupTransform = Callable[[torch.Tensor], torch.Tensor]


# RL algorithms by `algo.name`: each trainer module registers its class (vbon_exp.trainers imports them all).
ALGOS: dict[str, type["OnPolicyTrainer"]] = {}


def register_algo(name: str):
    def add(cls):
        ALGOS[name] = cls
        return cls

    return add


class AdaptiveKL:
    """The proportional KL controller of Ziegler et al. 2019 (§2.2), as trlx and TRL's PPO implement it: after an
    update whose responses had KL `kl`, β ← β·(1 + clip(kl/target − 1, −0.2, 0.2)·episodes/horizon)."""

    def __init__(self, target: float, horizon: int):
        self.target, self.horizon = float(target), int(horizon)

    def update(self, beta: float, kl_value: float, episodes: int) -> float:
        error = min(max(kl_value / self.target - 1.0, -0.2), 0.2)
        return beta * (1.0 + error * episodes / self.horizon)


class OnPolicyTrainer(TrainingLoop):
    """What PPO and RLOO share: one update (`train_step`; the loop around it is TrainingLoop's). Subclasses set
    `uses_value_head`, `responses_per_prompt` and `compute_advantages`.

    What an objective may change besides its sequence reward (all off by default, leaving the loss as it was):
    `loss_terms` (added to every minibatch loss), `pg_coef` (the weight of the clipped policy-gradient loss),
    `reference` (the model the per-token KL penalty is taken against, π_ref unless given: a moving anchor),
    `update_callbacks` (after every update), `state_modules` (more modules saved with each checkpoint and
    restored on resume, e.g. that anchor) and `group_transform` (the advantages of each prompt's group of
    rewards; only trainers with `applies_group_transform`: RLOO)."""

    uses_value_head = True
    applies_group_transform = False  # whether compute_advantages applies an objective's GroupTransform
    group_transform: GroupTransform | None = None  # the objective's (set per instance by __init__)
    pg_coef = 1.0  # the weight of the clipped policy-gradient loss (set per instance by __init__)

    def __init__(
        self,
        cfg: RLConfig,
        train_cfg: TrainConfig,
        *,
        policy: nn.Module,
        task,
        sampling: SamplingConfig,
        sequence_reward: SequenceReward,
        kl_coef: float,
        accelerator,
        run_dir: Path,
        tracker=None,
        seed: int = 0,
        loss_terms: list[LossTerm] | None = None,
        pg_coef: float = 1.0,
        reference: nn.Module | None = None,
        update_callbacks: list[UpdateCallback] | None = None,
        state_modules: dict[str, nn.Module] | None = None,
        group_transform: GroupTransform | None = None,
    ):
        if group_transform is not None and not self.applies_group_transform:
            raise ValueError(f"algo.name={cfg.name} cannot apply the objective's group transform (RLOO can)")
        self.group_transform = group_transform
        self.cfg, self.train_cfg, self.task, self.sampling = cfg, train_cfg, task, sampling
        self.loss_terms = list(loss_terms or [])
        self.pg_coef = float(pg_coef)
        self.reference = task.reference if reference is None else reference
        self.update_callbacks = list(update_callbacks or [])
        self.state_modules = dict(state_modules or {})
        self.sequence_reward, self.kl_coef, self.accelerator = sequence_reward, kl_coef, accelerator
        self.kl_controller = AdaptiveKL(cfg.target_kl, cfg.kl_horizon) if cfg.target_kl is not None else None
        self.run_dir, self.tracker, self.seed = Path(run_dir), tracker, seed
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.k = self.responses_per_prompt()
        self._check_batch_shape()
        self.num_updates = max(1, cfg.total_episodes // cfg.batch_size)
        self.steps_per_update = cfg.ppo_epochs * cfg.num_minibatches

        if not freezes_base(policy):  # LoRA placed its adapters on the top blocks already
            freeze_lower_layers(policy, cfg.trainable_layers)
        policy.eval()  # no dropout: rollout and training log-probs must come from the same function
        if train_cfg.gradient_checkpointing:
            enable_activation_checkpointing(policy)
        self.chunk = train_cfg.logits_chunk
        self.model = PolicyWithValue(policy, self.uses_value_head)
        groups = [{"params": [p for p in self.model.lm.parameters() if p.requires_grad], "lr": cfg.lr}]
        if self.model.value_head is not None:
            groups.append({"params": list(self.model.value_head.parameters()), "lr": cfg.lr * cfg.value_head_lr_scale})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                                           weight_decay=cfg.weight_decay)
        total_steps = self.num_updates * self.steps_per_update
        decay = (lambda s: max(0.0, 1.0 - s / total_steps)) if cfg.schedule == "linear" else (lambda s: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)
        self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        self.step = 0  # updates done

    # ------------------------------------------------------------------ subclass hooks
    def responses_per_prompt(self) -> int:
        return 1

    def compute_advantages(self, ro: Rollout) -> None:
        raise NotImplementedError

    def aggregate(self, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The loss of a minibatch from a per-token loss: the mean over its real tokens (PPO, RLOO)."""
        return masked_mean(per_token, mask)

    def reward_penalty(self, ro: Rollout) -> torch.Tensor:
        """[B, Lr] the KL penalty per token folded into the return before the β: algo.kl_estimator's estimate
        with algo.kl_in=reward, zero with algo.kl_in=loss (the loss carries it)."""
        if self.cfg.kl_in != "reward":
            return torch.zeros_like(ro.mask)
        return ro.penalty_tokens(self.cfg.kl_estimator)

    # ------------------------------------------------------------------ shapes and data
    @property
    def unwrapped(self) -> PolicyWithValue:
        return self.accelerator.unwrap_model(self.model)

    def _check_batch_shape(self) -> None:
        b, w, k = self.cfg.batch_size, self.world, self.k
        if b % (w * k):
            raise ValueError(
                f"algo.batch_size={b} must be divisible by processes × responses per prompt = {w} × {k}"
            )
        self.local_batch = b // w
        if self.local_batch % self.cfg.num_minibatches:
            raise ValueError(f"algo.batch_size={b} over {w} processes gives {self.local_batch} episodes per process, "
                             f"not divisible by algo.num_minibatches={self.cfg.num_minibatches}")
        self.minibatch_size = self.local_batch // self.cfg.num_minibatches
        self.micro_size = min(self.cfg.micro_batch_size or self.minibatch_size, self.minibatch_size)

    def prompt_indices(self, update: int) -> list[int]:
        """This process's prompts for an update: a stream of seeded permutations of the train prompts."""
        n_prompts = len(self.task.train_prompts)
        per_update = self.cfg.batch_size // self.k
        start = update * per_update + self.rank * (per_update // self.world)
        out, perms = [], {}
        for pos in range(start, start + per_update // self.world):
            epoch = pos // n_prompts
            if epoch not in perms:
                g = torch.Generator().manual_seed(derived_seed(self.seed, "prompts", epoch))
                perms[epoch] = torch.randperm(n_prompts, generator=g)
            out.append(int(perms[epoch][pos % n_prompts]))
        return out

    def generator(self, update: int, purpose: str) -> torch.Generator:
        device = self.accelerator.device
        return torch.Generator(device=device).manual_seed(derived_seed(self.seed, purpose, update, self.rank))

    # ------------------------------------------------------------------ one update
    @torch.no_grad()
    def rollout(self, update: int) -> Rollout:
        idx = self.prompt_indices(update)
        prompts = [self.task.train_prompts[i] for i in idx]
        with self.accelerator.autocast():
            samples = sample_responses(
                self.unwrapped.lm, prompts, self.k, self.sampling, eos_id=self.task.eos_id, pad_id=self.task.pad_id,
                generator=self.generator(update, "rollout"), prompt_index=idx,
            )
        score_samples(self.task.reward, samples, what=f"training update {update}")
        samples = samples.to(self.accelerator.device)
        mask = samples.response_mask.float()
        logp_old, logp_ref, values = [], [], []
        for start in range(0, len(samples), self.micro_size):
            part = samples.select(slice(start, start + self.micro_size))
            with self.accelerator.autocast():
                stats, v = self.unwrapped(part, self.sampling.temperature, chunk=self.chunk, other=self.reference)
            logp_old.append(stats.logp)
            logp_ref.append(stats.other_logp)
            if v is not None:
                values.append(v)
        logp_old = torch.cat(logp_old) * mask
        logp_ref = torch.cat(logp_ref) * mask
        seq_reward = self.sequence_reward(samples, logp_ref.sum(-1).double()).float().to(mask.device)
        if self.cfg.reward_clip is not None:
            seq_reward = seq_reward.clamp(-self.cfg.reward_clip, self.cfg.reward_clip)
        if not bool(torch.isfinite(seq_reward).all()):
            raise RewardError(
                f"the objective's sequence reward is not finite in training update {update} "
                f"(reward model {self.task.reward.name!r}); no checkpoint was written"
            )
        return Rollout(samples, mask, logp_old, logp_ref, torch.cat(values) * mask if values else None, seq_reward)

    def loss(self, mb: Rollout) -> tuple[torch.Tensor, dict]:
        c = self.cfg
        needs_kl = any(getattr(term, "needs_reference_kl", False) for term in self.loss_terms)
        stats_t, values = self.model(mb.samples, self.sampling.temperature, chunk=self.chunk, entropy=True,
                                     other=self.task.reference if needs_kl else None, kl=needs_kl)
        logp = stats_t.logp
        ratio = torch.exp(logp - mb.logp_old)
        pg = torch.maximum(-mb.advantages * ratio, -mb.advantages * ratio.clamp(1 - c.clip, 1 + c.clip))
        pg_loss = self.aggregate(pg, mb.mask)
        stats = {
            "pg_loss": pg_loss.detach(),
            "clipfrac": masked_mean(((ratio - 1).abs() > c.clip).float(), mb.mask).detach(),
            "approx_kl": masked_mean(0.5 * (logp - mb.logp_old) ** 2, mb.mask).detach(),
            "entropy": masked_mean(stats_t.entropy, mb.mask).detach(),
        }
        loss = pg_loss if self.pg_coef == 1.0 else self.pg_coef * pg_loss
        if c.kl_in == "loss":  # β·k(π_θ, π_ref) per token, differentiated through log π_θ (GRPO's placement)
            kl_loss = self.aggregate(kl.KL_ESTIMATORS[c.kl_estimator](logp, mb.logp_ref), mb.mask)
            loss = loss + self.kl_coef * kl_loss
            stats["kl_loss"] = kl_loss.detach()
        if values is not None:
            v_clipped = mb.values + (values - mb.values).clamp(-c.vf_clip, c.vf_clip)
            vf = 0.5 * torch.maximum((values - mb.returns) ** 2, (v_clipped - mb.returns) ** 2)
            vf_loss = masked_mean(vf, mb.mask)
            loss = loss + c.vf_coef * vf_loss
            stats["vf_loss"] = vf_loss.detach()
        for term in self.loss_terms:
            extra, extra_stats = term(self, mb, stats_t)
            loss = loss + extra
            stats.update({k: v.detach() if torch.is_tensor(v) else v for k, v in extra_stats.items()})
        return loss, stats

    def optimise(self, ro: Rollout, update: int) -> dict:
        """`ppo_epochs` passes over the batch, each in `num_minibatches` optimizer steps on a seeded permutation."""
        sums: dict[str, float] = {}
        count = 0
        for epoch in range(self.cfg.ppo_epochs):
            g = torch.Generator().manual_seed(derived_seed(self.seed, "minibatch", update, epoch, self.rank))
            order = torch.randperm(len(ro.samples), generator=g).to(ro.mask.device)
            for start in range(0, len(order), self.minibatch_size):
                stats = self.minibatch_step(ro, order[start : start + self.minibatch_size])
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
        return {key: value / count for key, value in sums.items()}

    def minibatch_step(self, ro: Rollout, idx: torch.Tensor) -> dict[str, float]:
        """One optimizer step on the minibatch `idx`, its gradient accumulated over micro-batches of
        `algo.micro_batch_size` sequences (each loss weighted by its share of the minibatch)."""
        self.optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = {}
        for start in range(0, len(idx), self.micro_size):
            part = idx[start : start + self.micro_size]
            share = len(part) / len(idx)
            loss, part_stats = self.loss(ro.minibatch(part))
            self.accelerator.backward(loss if share == 1.0 else loss * share)
            for key, value in part_stats.items():
                stats[key] = stats.get(key, 0.0) + float(value) * share
        self.clip_and_step(self.cfg.max_grad_norm)
        return stats

    def rollout_stats(self, ro: Rollout) -> dict:
        kl_seq = ro.kl_tokens.sum(-1)
        return {
            "reward": float(ro.samples.rewards.float().mean()),
            "objective_reward": float(ro.seq_reward.mean()),
            "kl": float(kl_seq.mean()),
            "response_length": float(ro.mask.sum(-1).mean()),
        }

    # ------------------------------------------------------------------ one unit of the loop (vbon_exp/trainers/loop.py)
    def total_units(self) -> int:
        return self.num_updates

    def progress_desc(self) -> str:
        return f"{self.cfg.name} updates"

    def train_step(self, update: int) -> dict:
        """One update: rollout, advantages, `ppo_epochs` × `num_minibatches` optimizer steps; its stats and timings."""
        t0 = time.perf_counter()
        ro = self.rollout(update)
        self.compute_advantages(ro)
        t1 = time.perf_counter()
        stats = {**self.rollout_stats(ro), **self.optimise(ro, update)}
        t2 = time.perf_counter()
        tokens = float(ro.mask.sum()) * self.world
        stats.update(lr=self.scheduler.get_last_lr()[0], rollout_s=t1 - t0, update_s=t2 - t1,
                     generation_tok_s=tokens / max(t1 - t0, 1e-9),
                     update_tok_s=tokens * self.cfg.ppo_epochs / max(t2 - t1, 1e-9))
        if self.kl_controller is not None:  # β for the next update, from this rollout's KL
            self.kl_coef = self.kl_controller.update(self.kl_coef, stats["kl"], self.cfg.batch_size)
            stats["kl_coef"] = self.kl_coef
        return stats

    def extra_state(self) -> dict:
        return {"kl_coef": self.kl_coef} if self.kl_controller is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.kl_controller is not None and "kl_coef" in state:
            self.kl_coef = float(state["kl_coef"])

    def unit_done(self) -> dict:
        stats: dict = {}
        for callback in self.update_callbacks:
            stats.update(callback(self) or {})
        return stats

    def postfix(self, metrics: dict) -> dict:
        return {"reward": f"{metrics['reward']:.3f}", "kl": f"{metrics['kl']:.3f}"}
