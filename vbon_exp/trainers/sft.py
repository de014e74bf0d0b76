"""Supervised fine-tuning on fixed (prompt, response) pairs: cross-entropy on response tokens only.

Used by BoN-SFT. The loss is the mean token negative log-likelihood under the policy at the sampling temperature,
so the policy as sampled (logits / T) is what fits the data."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vbon_exp.errors import check_number
from vbon_exp.modeling import Samples
from vbon_exp.progress import progress
from vbon_exp.trainers.shared import (
    CheckpointedTrainer,
    SupervisedLoopConfig,
    TrainConfig,
    derived_seed,
    replica_checksums,
)

log = logging.getLogger(__name__)


@dataclass
class SFTConfig(SupervisedLoopConfig):
    """conf `sft:`: the supervised fine-tuning loop (BoN-SFT), as `algo:` is the RL loop (the optimiser keys and their
    defaults: SupervisedLoopConfig)."""

    # BoN responses drawn per training prompt for BoN-SFT's fine-tuning set (≥ 1).
    samples_per_prompt: int = 1

    def check(self, prefix: str = "sft") -> None:
        super().check(prefix)
        check_number(f"{prefix}.samples_per_prompt", self.samples_per_prompt, integer=True, minimum=1)


class SFTTrainer(CheckpointedTrainer):
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

    def train(self):
        self.maybe_resume(self.total_steps)
        stop = self.total_steps if self.train_cfg.max_updates is None else min(self.total_steps,
                                                                               self.train_cfg.max_updates)
        bar = progress(total=stop, initial=self.step, desc="sft steps", unit="step",
                   disable=not self.accelerator.is_main_process)
        while self.step < stop:
            t0 = time.perf_counter()
            mb = self.batch(self.step)
            logp = self.response_log_probs(mb)
            mask = mb.response_mask.float()
            loss = -(logp * mask).sum() / mask.sum().clamp(min=1)
            self.optimizer_step(loss, self.cfg.max_grad_norm)
            self.step += 1
            if self.tracker is not None and self.accelerator.is_main_process:
                tokens = float(mask.sum())
                self.tracker.log({"train/sft_loss": float(loss.detach()), "train/lr": self.scheduler.get_last_lr()[0],
                                  "train/update_tok_s": tokens / max(time.perf_counter() - t0, 1e-9)},
                                 step=self.step)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            bar.update(1)
            self.save_if_due(stop)
        bar.close()
        self.checksums = replica_checksums(self.unwrapped, self.accelerator)
        return self.unwrapped
