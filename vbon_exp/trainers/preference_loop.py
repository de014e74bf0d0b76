"""Offline preference optimisation on fixed (chosen, rejected) pairs: DPO, IPO and BoNBoN share this loop.

h(y) = log π_θ(y|x) − log π_ref(y|x), summed over response tokens at the sampling temperature with the RL
trainers' log-prob code (vbon_exp/logprobs.py); π_ref's side is computed once, before the first step. The loss
of a pair (vbon_exp/preference_losses.py) is DPO's −log σ(β·(h_w − h_l)), or α·(−log π_θ(y_w|x)) + (1 − α)·(h_w − h_l − τ)²
(IPO: α = 0, τ = 1/(2β); BoNBoN: τ = 1/(2β*_n)), averaged over a batch of pairs.

Epochs over the pairs in seeded permutations (seed, epoch), so a resumed run repeats an uninterrupted one exactly;
each process trains on its own equal share of the pairs (DDP averages the gradients)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vbon_exp.logprobs import sequence_log_probs
from vbon_exp.modeling import Samples
from vbon_exp.pairs import PairSet
from vbon_exp.preference_losses import dpo_loss, squared_margin_loss
from vbon_exp.trainers.loop import TrainingLoop, tokens_per_s
from vbon_exp.trainers.shared import TrainConfig, derived_seed
from vbon_exp.settings.train import PreferenceTrainConfig  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairLoss:
    """Which loss a pair gets: kind "dpo" (β) or "squared" (τ, α). `beta` also scales the logged implicit rewards
    β·h (TRL's rewards/chosen): β for DPO and IPO, β*_n for BoNBoN."""

    kind: str
    beta: float
    tau: float = 0.0
    alpha: float = 0.0

    def __call__(self, h_w, h_l, logp_w) -> tuple[torch.Tensor, dict]:
        if self.kind == "dpo":
            return dpo_loss(h_w, h_l, self.beta).mean(), {}
        squared = squared_margin_loss(h_w, h_l, self.tau).mean()
        nll = -logp_w.mean()
        loss = (1 - self.alpha) * squared + self.alpha * nll if self.alpha else squared
        return loss, {"squared_loss": squared.detach(), "chosen_nll": nll.detach()}


class PreferenceTrainer(TrainingLoop):
    unit = "step"

    def __init__(self, cfg: PreferenceTrainConfig, train_cfg: TrainConfig, *, policy, reference, pairs: PairSet,
                 loss: PairLoss, temperature: float, accelerator, run_dir: Path, tracker=None, seed: int = 0,
                 logp_batch_size: int = 64, name: str = "preference"):
        self.cfg, self.train_cfg, self.loss_fn, self.temperature = cfg, train_cfg, loss, temperature
        self.accelerator, self.run_dir, self.tracker, self.seed, self.name = (
            accelerator, Path(run_dir), tracker, seed, name)
        world, rank = accelerator.num_processes, accelerator.process_index
        share = len(pairs) // world  # equal shares: every process takes the same number of steps
        if share == 0:
            raise ValueError(f"{len(pairs)} pairs cannot be shared by {world} processes")
        if share * world < len(pairs):
            log.warning("%d pairs: the last %d are left out so %d processes get equal shares",
                        len(pairs), len(pairs) - share * world, world)
        mine = torch.arange(rank, share * world, world)
        device = accelerator.device
        self.chosen = pairs.chosen.select(mine).to(device)
        self.rejected = pairs.rejected.select(mine).to(device)
        # π_ref's log-probs of every pair, once: the reference is frozen
        with accelerator.autocast():  # π_ref's log-probs as the policy's are computed
            self.ref_chosen = sequence_log_probs(reference, self.chosen, temperature, logp_batch_size,
                                                 train_cfg.logits_chunk).float()
            self.ref_rejected = sequence_log_probs(reference, self.rejected, temperature, logp_batch_size,
                                                   train_cfg.logits_chunk).float()
        self.setup_supervised(policy, cfg, share)

    def batch_indices(self, step: int) -> torch.Tensor:
        epoch, within = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(derived_seed(self.seed, "preference-epoch", epoch))
        order = torch.randperm(len(self.chosen), generator=g)
        return order[within * self.cfg.batch_size : (within + 1) * self.cfg.batch_size].to(self.chosen.prompt_ids.device)

    def loss(self, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        chosen, rejected = self.chosen.select(idx), self.rejected.select(idx)
        both = Samples.cat([chosen, rejected], pad_id=0)  # one forward pass for the two sides (masks mark padding)
        logp = self.response_log_probs(both).sum(-1)
        logp_w, logp_l = logp[: len(idx)], logp[len(idx):]
        h_w, h_l = logp_w - self.ref_chosen[idx], logp_l - self.ref_rejected[idx]
        loss, stats = self.loss_fn(h_w, h_l, logp_w)
        beta = self.loss_fn.beta
        stats.update(
            loss=loss.detach(), margin=(h_w - h_l).mean().detach(),
            chosen_reward=(beta * h_w).mean().detach(), rejected_reward=(beta * h_l).mean().detach(),
            accuracy=(h_w > h_l).float().mean(),
            tokens=float(both.response_mask.sum()),
        )
        return loss, stats

    def progress_desc(self) -> str:
        return f"{self.name} steps"

    def train_step(self, step: int) -> dict:
        """One optimizer step on the pairs of batch `step`."""
        t0 = time.perf_counter()
        loss, stats = self.loss(self.batch_indices(step))
        self.optimizer_step(loss, self.cfg.max_grad_norm)
        tokens = stats.pop("tokens")
        metrics = {k: float(v) for k, v in stats.items()}
        metrics.update(lr=self.scheduler.get_last_lr()[0], update_tok_s=tokens_per_s(tokens, t0))
        return metrics

    def postfix(self, metrics: dict) -> dict:
        return {"loss": f"{metrics['loss']:.3f}", "acc": f"{metrics['accuracy']:.2f}"}
