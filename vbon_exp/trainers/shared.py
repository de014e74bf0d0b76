"""What every trainer shares: one optimizer step, and saving / resuming (weights, optimizer, scheduler, counter).

Subclasses set `model` (possibly DDP-wrapped), `unwrapped`, `optimizer`, `scheduler`, `accelerator`, `run_dir`,
`train_cfg`, and count progress in `self.step` (an RL update, or an SFT optimizer step: `unit` names it)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from vbon_exp.trainers.checkpoint import latest_checkpoint, load_checkpoint, remove_partial_checkpoints, save_checkpoint
from vbon_exp.trainers.rollout import PolicyWithValue
from vbon_exp.trainers.trainable import RoundingMeter, enable_activation_checkpointing, freezes_base
from vbon_exp.settings.train import SupervisedLoopConfig, TrainConfig, check_cpu_bf16  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def freeze_lower_layers(model: torch.nn.Module, trainable_layers: int | None) -> None:
    """Train only the top `trainable_layers` transformer blocks and the final norm (the seed code trained the top 2
    of GPT-2's 12). Embeddings (tied to the LM head in GPT-2) stay frozen."""
    if trainable_layers is None:
        return
    blocks = None
    for path in ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        try:
            for attr in path.split("."):
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        blocks = obj
        break
    if blocks is None:
        raise ValueError(f"algo.trainable_layers: cannot find the transformer blocks of {type(model).__name__}")
    if not 1 <= trainable_layers <= len(blocks):
        raise ValueError(f"algo.trainable_layers={trainable_layers} must be between 1 and the model's "
                         f"{len(blocks)} transformer blocks")
    model.requires_grad_(False)
    for block in list(blocks)[len(blocks) - trainable_layers :]:
        block.requires_grad_(True)
    for name in ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm"):
        obj = model
        try:
            for attr in name.split("."):
                obj = getattr(obj, attr)
            obj.requires_grad_(True)
        except AttributeError:
            pass


def derived_seed(*parts) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


@torch.no_grad()
def replica_checksums(module: torch.nn.Module, accelerator) -> list[float]:
    """A float64 checksum of the parameters on every process. DDP keeps replicas identical; if they ever diverge
    (a desync), training must not silently continue, so a mismatch raises."""
    total = sum((p.double() * (1 + torch.arange(p.numel(), device=p.device).view_as(p) % 7)).sum()
                for p in module.parameters())
    sums = accelerator.gather(torch.tensor([float(total)], dtype=torch.float64, device=accelerator.device))
    sums = [float(x) for x in sums.cpu()]
    if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
        raise RuntimeError(f"parameters differ across processes after training: checksums {sums}")
    return sums


def adapter_dropout_on(policy: torch.nn.Module, rate: float) -> bool:
    """train.lora.dropout in the offline loops (SFT, preference): the LoRA adapters' dropout modules in train mode,
    the rest of the policy in eval mode (the base model's own dropout stays off, as in every loop here). Returns
    whether any adapter dropout is on. The RL trainers refuse a rate > 0 (vbon_exp.config.check_settings)."""
    if rate <= 0:
        return False
    modules = [m for name, m in policy.named_modules() if name.split(".")[-1] == "lora_dropout"]  # peft's
    for module in modules:
        module.train()
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for module in modules for m in module.modules())


class CheckpointedTrainer:
    unit = "update"
    step = 0
    # modules saved with every checkpoint and restored on resume besides the policy (name -> module)
    state_modules: dict = {}
    # with train.pure_half_precision: the share of the first update's weight changes that rounded away
    first_update_rounding: float | None = None

    def checkpoint_modules(self) -> dict:
        return {"policy": self.accelerator.unwrap_model(self.model), **self.state_modules}

    def setup_supervised(self, policy, cfg: SupervisedLoopConfig, examples: int) -> None:
        """The offline loops' set-up (sft, preference): the top `trainable_layers` blocks trainable (unless LoRA
        placed its adapters there), eval mode (no dropout: the loss must be the same function of θ as the evaluator's
        log-probs), activation checkpointing when asked, AdamW over the trainable parameters, the learning-rate
        schedule over epochs × ⌈examples / batch_size⌉ steps, accelerate.prepare of the policy wrapped as
        PolicyWithValue (without value head): its forward is the chunked log-prob pass, under DDP and autocast."""
        if not freezes_base(policy):
            freeze_lower_layers(policy, cfg.trainable_layers)
        policy.eval()
        self.adapter_dropout = adapter_dropout_on(policy, self.train_cfg.lora.dropout)
        if self.train_cfg.gradient_checkpointing:
            enable_activation_checkpointing(policy)
        self.chunk = self.train_cfg.logits_chunk
        self.steps_per_epoch = max(1, -(-examples // cfg.batch_size))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        decay = (lambda s: max(0.0, 1.0 - s / self.total_steps)) if cfg.schedule == "linear" else (lambda s: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)
        self.model, self.optimizer = self.accelerator.prepare(PolicyWithValue(policy, False), self.optimizer)
        self.step = 0

    def response_log_probs(self, samples) -> torch.Tensor:
        """log π_θ(y_t | x, y_<t) of `samples`' response tokens through the prepared policy (grad, DDP, autocast)."""
        return self.model(samples, self.temperature, chunk=self.chunk)[0].logp

    @property
    def unwrapped(self):
        """The trained LM (the offline loops; the RL trainer's is the LM with its value head)."""
        return self.accelerator.unwrap_model(self.model).lm

    def optimizer_step(self, loss, max_grad_norm: float | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.clip_and_step(max_grad_norm)

    def clip_and_step(self, max_grad_norm: float | None) -> None:
        """Clip the accumulated gradient's norm, then one optimizer and one scheduler step."""
        if max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        meter = None
        if self.train_cfg.pure_half_precision and self.first_update_rounding is None:
            meter = RoundingMeter(list(self.model.parameters()))
        self.optimizer.step()
        self.scheduler.step()  # by hand, once per optimizer step (accelerate would step it once per process)
        if meter is not None and meter.params:
            self.first_update_rounding = meter.rounded_away()
            log.warning("train.pure_half_precision: %.1f%% of the first update's weight changes rounded away (entries "
                        "with a nonzero gradient left unchanged)", 100 * self.first_update_rounding)

    @property
    def checkpoint_root(self) -> Path:
        return Path(self.run_dir) / "checkpoints"

    def save(self) -> None:
        if self.accelerator.is_main_process:
            state = {"update": self.step, "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), **self.extra_state()}
            path = save_checkpoint(self.checkpoint_root, self.step, self.checkpoint_modules(), state,
                                   trainable_only=self.train_cfg.lora.enabled)
            log.info("checkpoint at %s %d: %s", self.unit, self.step, path)
        self.accelerator.wait_for_everyone()

    def save_if_due(self, stop: int) -> None:
        """A checkpoint every `train.checkpoint_every` steps, and always at the last one (`stop`)."""
        every = self.train_cfg.checkpoint_every
        if (every and self.step % every == 0) or self.step == stop:
            self.save()

    def maybe_resume(self, total: int) -> None:
        """Continue from the newest valid checkpoint, as `train.resume` (auto | true | false) says."""
        resume = self.train_cfg.resume
        if self.accelerator.is_main_process:  # this run owns its checkpoint directory
            remove_partial_checkpoints(self.checkpoint_root)
        path = latest_checkpoint(self.checkpoint_root)
        if resume is True and path is None:
            raise FileNotFoundError(f"train.resume=true but there is no checkpoint under {self.checkpoint_root}")
        if path is None or resume is False:
            return
        state = load_checkpoint(path, self.checkpoint_modules())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["update"])
        self.load_extra_state(state)
        log.info("resumed from %s (%s %d of %d)", path, self.unit, self.step, total)

    def extra_state(self) -> dict:
        """More training state saved with each checkpoint (plain values; e.g. an adaptive KL coefficient)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` saved."""
