"""Supervised fine-tuning on fixed (prompt, response) pairs: cross-entropy on response tokens only.

Used by BoN-SFT. The loss is the mean token negative log-likelihood under the policy at the sampling temperature,
so the policy as sampled (logits / T) is what fits the data."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from vbon_exp.modeling import Samples
from vbon_exp.trainers.loop import TrainingLoop, tokens_per_s
from vbon_exp.trainers.shared import TrainConfig, derived_seed
from vbon_exp.settings.train import SFTConfig  # noqa: F401  (its settings; re-exported)

log = logging.getLogger(__name__)


class SFTTrainer(TrainingLoop):
    unit = "step"

    def __init__(self, cfg: SFTConfig, train_cfg: TrainConfig, *, policy, data: Samples, temperature: float,
                 accelerator, run_dir: Path, tracker=None, seed: int = 0):
        self.cfg, self.train_cfg, self.data, self.temperature = cfg, train_cfg, data, temperature
        self.accelerator, self.run_dir, self.tracker, self.seed = accelerator, Path(run_dir), tracker, seed
        self.setup_supervised(policy, cfg, len(data))

    def batch(self, step: int) -> Samples:
        epoch, within = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(derived_seed(self.seed, "sft-epoch", epoch))
        order = torch.randperm(len(self.data), generator=g)
        idx = order[within * self.cfg.batch_size : (within + 1) * self.cfg.batch_size]
        return self.data.select(idx).to(self.accelerator.device)

    def progress_desc(self) -> str:
        return "sft steps"

    def train_step(self, step: int) -> dict:
        """One optimizer step on the mean token NLL of batch `step`."""
        t0 = time.perf_counter()
        mb = self.batch(step)
        logp = self.response_log_probs(mb)
        mask = mb.response_mask.float()
        loss = -(logp * mask).sum() / mask.sum().clamp(min=1)
        self.optimizer_step(loss, self.cfg.max_grad_norm)
        return {"sft_loss": float(loss.detach()), "lr": self.scheduler.get_last_lr()[0],
                "update_tok_s": tokens_per_s(float(mask.sum()), t0)}

    def postfix(self, metrics: dict) -> dict:
        return {"loss": f"{metrics['sft_loss']:.3f}"}
