"""The policy a trainer optimises, as `train:` asks for it: its precision, LoRA adapters, activation checkpointing.

- Precision. The policy is loaded in float32 whatever dtype its checkpoint was saved in (most hub checkpoints are
  bf16): AdamW's update of a bf16 weight of size ~0.02 at lr 3e-6 is below half its rounding step, so most entries
  would never move. Speed comes from `train.mixed_precision` (autocast; accelerate), not from half-precision weights.
  `train.pure_half_precision=true` trains the weights in their half dtype as asked, and the trainer logs the
  fraction of its first update that rounded away (`first_update_rounding`).
- LoRA (`train.lora.rank > 0`). The adapters go on the task's reference model itself — the frozen base, in
  `model.dtype` — and the task's reference becomes a view of that base with the policy's adapter disabled (or with
  the reference's own adapter active, vbon_exp/adapters.py): one copy of the weights in memory.
- Activation checkpointing (`train.gradient_checkpointing`). transformers checkpoints a block only when it is in
  training mode; the policy stays in eval mode (no dropout: the rollout's and the update's log-probs must be one
  function), so only the checkpointed blocks are flagged as training — their dropout modules (children) stay off."""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from vbon_exp import adapters
from vbon_exp.errors import ConfigError
from vbon_exp.modeling import load_causal_lm, signature_model

log = logging.getLogger(__name__)

HALF = (torch.bfloat16, torch.float16)


def apply_tf32(enabled: bool, device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (`train.tf32`); nothing on other devices."""
    if device.type != "cuda":
        return
    mode = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


def load_trainable_weights(name_or_path: str, device: torch.device, *, half: Optional[str] = None,
                           trust_remote_code: bool = False) -> nn.Module:
    """A trainable copy of the model at `name_or_path` (a directory with a trained adapter is merged into its base):
    float32, or with `half` (pure half precision) the dtype named by `model.dtype` — as saved when `half` is "saved"."""
    dtype = torch.float32 if half is None else (None if half == "saved" else getattr(torch, half))
    if adapters.is_adapter_dir(name_or_path):
        model = adapters.load_adapted(name_or_path, device, dtype, trust_remote_code).merge_and_unload()
    else:
        model = load_causal_lm(name_or_path, device, trust_remote_code, dtype=dtype)
    return model.requires_grad_(True)


def build_policy(task, train_cfg, device: torch.device, *, model_dtype: Optional[str] = None,
                 trust_remote_code: bool = False, trainable_layers: Optional[int] = None, seed: int = 0) -> nn.Module:
    """The policy to train for `task` as `train_cfg` asks (module docstring). With LoRA, `task.reference` is
    replaced by the view of the shared base, so everything after training (evaluation) reads the same π_ref."""
    if train_cfg.lora.enabled:
        layers = top_layer_indices(task.reference, trainable_layers)
        policy, view = adapters.attach_lora(task.reference, train_cfg.lora, layers, seed=seed)
        task.reference = view
        return policy
    half = (model_dtype or "saved") if train_cfg.pure_half_precision else None
    policy = load_trainable_weights(task.policy_init, device, half=half, trust_remote_code=trust_remote_code)
    dtype = next(policy.parameters()).dtype
    if train_cfg.pure_half_precision:
        if dtype not in HALF:
            log.warning("train.pure_half_precision=true, but the policy's weights are %s: set model.dtype=bfloat16 "
                        "(or float16) to train in half precision", dtype)
        else:
            log.warning("train.pure_half_precision=true: training the policy's %s weights without float32 masters; "
                        "updates smaller than half a rounding step are lost (the first update's share is logged)",
                        dtype)
    else:
        log.info("policy: %s weights for training whatever dtype %s was saved in (float32 masters; "
                 "train.mixed_precision=%s sets the compute dtype)", str(dtype).removeprefix("torch."),
                 task.policy_init, train_cfg.mixed_precision)
    return policy


def top_layer_indices(model, trainable_layers: Optional[int]) -> Optional[list[int]]:
    """The indices of the top `trainable_layers` transformer blocks (LoRA's layers_to_transform), or None = all."""
    if trainable_layers is None:
        return None
    count = getattr(signature_model(model).config, "num_hidden_layers", None)
    if count is None or not 1 <= trainable_layers <= count:
        raise ConfigError(f"trainable_layers={trainable_layers} must be between 1 and the model's {count} blocks")
    return list(range(count - trainable_layers, count))


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Checkpoint every transformer block of `model` (plain or peft) in the backward pass, keeping the model's eval
    mode elsewhere (module docstring). Returns the number of checkpointed blocks. Call after any `.eval()`."""
    inner = signature_model(model)
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise ConfigError(f"train.gradient_checkpointing=true: {type(inner).__name__} does not support it")
    kwargs = {"use_reentrant": False}  # the reentrant variant needs inputs that require grad (frozen embeddings)
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers ≥ 5.2x; gradient_checkpointing_enable before
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer as Block
    except ImportError:  # older transformers: every module that carries the flag, but the model itself
        Block = nn.Module
    blocks = [m for m in inner.modules()
              if isinstance(m, Block) and getattr(m, "gradient_checkpointing", False) and m is not inner]
    for block in blocks:
        block.training = True  # transformers checkpoints a block only in training mode; its children stay in eval
    return len(blocks)


def freezes_base(policy: nn.Module) -> bool:
    """Whether only adapters train (LoRA): then `trainable_layers` was applied when the adapters were placed."""
    return adapters.is_adapted(policy)


class RoundingMeter:
    """With pure half precision: the share of a step's weight changes that rounded away — entries with a nonzero
    gradient whose stored value did not change — measured on the first optimizer step."""

    def __init__(self, params: list[nn.Parameter]):
        self.params = [p for p in params if p.requires_grad and p.dtype in HALF]
        self.before = [p.detach().clone() for p in self.params]

    def rounded_away(self) -> float:
        moved = wanted = 0
        for p, old in zip(self.params, self.before):
            if p.grad is None:
                continue
            nonzero = p.grad != 0
            wanted += int(nonzero.sum())
            moved += int(((p.detach() != old) & nonzero).sum())
        return 1.0 - moved / max(wanted, 1)
