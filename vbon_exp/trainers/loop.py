"""The one training loop every trainer runs (RL updates, SFT steps, preference steps): `TrainingLoop.train`.

Why one: the loop's bookkeeping — resume, where to stop (`train.max_updates`), the progress bar, when to log
(`train.log_every` and the last unit), when to checkpoint, the replica checksum at the end — must mean the same in
every trainer, or a setting silently does nothing in one of them (SFT once logged every step whatever
`train.log_every` said). Written once here, a trainer supplies only what is its own: one unit of training
(`train_step`), its names (`unit`, `progress_desc`), the progress-bar summary of a unit (`postfix`), and where it
has one, work after each unit (`unit_done`: the RL trainer's update callbacks).

A unit's metrics are logged as `train/<key>` exactly as the step returns them; between two log points the skipped
units' metrics are dropped (no trainer averages across units)."""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from vbon_exp.progress import progress
from vbon_exp.trainers.shared import CheckpointedTrainer, derived_seed, replica_checksums

log = logging.getLogger(__name__)


def tokens_per_s(tokens: float, since: float) -> float:
    """Throughput of `tokens` processed since the `time.perf_counter()` reading `since`."""
    return tokens / max(time.perf_counter() - since, 1e-9)


class TrainingLoop(CheckpointedTrainer):
    """A checkpointed trainer with the shared loop. Subclasses implement `train_step` and `progress_desc`, and
    where needed `total_units`, `postfix` and `unit_done`."""

    # ------------------------------------------------------------------ what a trainer supplies
    def total_units(self) -> int:
        """Units of the full run (the learning-rate schedule spans them); the offline loops' `setup_supervised`
        sets `total_steps`."""
        return self.total_steps

    def progress_desc(self) -> str:
        raise NotImplementedError

    def train_step(self, unit: int) -> dict:
        """Train unit number `unit` (0-based; `self.step` before it counts); return its metrics (keys without the
        `train/` prefix)."""
        raise NotImplementedError

    def unit_done(self) -> dict:
        """After a unit is counted in `self.step`, before it is logged and checkpointed: more metrics to log."""
        return {}

    def postfix(self, metrics: dict) -> dict:
        """The progress bar's summary of a unit's metrics (name -> text)."""
        return {}

    # ------------------------------------------------------------------ the loop
    def train(self):
        """Resume, train units up to the stop point (logging and checkpointing as due), check the replicas agree;
        returns the trained LM."""
        stop = self.resume_and_stop()
        bar = progress(total=stop, initial=self.step, desc=self.progress_desc(), unit=self.unit,
                       disable=not self.accelerator.is_main_process)
        while self.step < stop:
            with self.unit_random_draws(self.step):
                metrics = self.train_step(self.step)
            self.step += 1
            metrics.update(self.unit_done())
            self.log_if_due(metrics, stop)
            bar.set_postfix(**self.postfix(metrics), refresh=False)
            bar.update(1)
            self.save_if_due(stop)
        bar.close()
        self.check_replicas()
        return self.accelerator.unwrap_model(self.model).lm  # PolicyWithValue's LM, in every trainer

    @contextlib.contextmanager
    def unit_random_draws(self, unit: int):
        """With adapter dropout on (train.lora.dropout in the offline loops), a unit's dropout masks drawn from
        (seed, unit) alone, so a resumed run draws what the uninterrupted one did; otherwise nothing."""
        if not getattr(self, "adapter_dropout", False):
            yield
            return
        device = self.accelerator.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(derived_seed(self.seed, "adapter-dropout", unit))
            yield

    def resume_and_stop(self) -> int:
        """Continue from a checkpoint (as `train.resume` says); the unit count to stop at: the full run, or
        `train.max_updates` when that comes first."""
        total = self.total_units()
        self.maybe_resume(total)
        limit = self.train_cfg.max_updates
        return total if limit is None else min(total, limit)

    def log_if_due(self, metrics: dict, stop: int) -> None:
        """Log to the tracker (main process only) every `train.log_every` units and at the last one (`stop`)."""
        if self.tracker is None or not self.accelerator.is_main_process:
            return
        if self.step % self.train_cfg.log_every == 0 or self.step == stop:
            self.tracker.log({f"train/{k}": v for k, v in metrics.items()}, step=self.step)

    def check_replicas(self) -> None:
        """`self.checksums`: the parameters' checksum on every process (raises if the replicas diverged)."""
        self.checksums = replica_checksums(self.accelerator.unwrap_model(self.model), self.accelerator)
        world = self.accelerator.num_processes
        if world > 1:
            log.info("parameters identical on all %d processes (checksum %.12g)", world, self.checksums[0])

