"""What the trained objectives share: the `train:` node, the trainable policy it describes, and saving the result.

Every trained objective (RL, BoN-SFT, the preference losses) loads its policy here, so precision, LoRA and the
reference's view of a shared base (vbon_exp/trainers/trainable.py) mean the same in all of them."""

from __future__ import annotations

import logging
from typing import Optional


from vbon_exp.adapters import is_adapted, save_merged
from vbon_exp.objectives.base import RunContext
from vbon_exp.trainers.shared import derived_seed
from vbon_exp.trainers.trainable import build_policy

log = logging.getLogger(__name__)


def train_config(ctx: RunContext):
    """The run's `train:` node as its dataclass (vbon_exp.trainers.shared.TrainConfig)."""
    return ctx.settings.train


def model_setting(ctx: RunContext, key: str, default=None):
    """A key of the `model` group (language-model tasks), or `default` on tasks without it (synthetic)."""
    return ctx.settings.select(f"model.{key}", default)


def trust_remote_code(ctx: RunContext) -> bool:
    return bool(model_setting(ctx, "trust_remote_code", False))


def policy_half(ctx: RunContext) -> Optional[str]:
    """The half dtype the policy trains in with train.pure_half_precision (model.dtype, or "saved"), else None."""
    if not ctx.settings.train.pure_half_precision:
        return None
    return model_setting(ctx, "dtype") or "saved"


def trainable_policy(ctx: RunContext, trainable_layers: Optional[int] = None):
    """The policy the objective trains, as `train:` asks (float32 masters, LoRA on the shared base)."""
    return build_policy(ctx.task, train_config(ctx), ctx.device, model_dtype=model_setting(ctx, "dtype"),
                        trust_remote_code=trust_remote_code(ctx), trainable_layers=trainable_layers,
                        seed=derived_seed(ctx.settings.seed, "lora-init"))


def save_policy(ctx: RunContext, lm) -> None:
    """The trained policy in `<run_dir>/policy`, loadable with from_pretrained (safetensors); with LoRA the adapter
    merged in, and the adapter alone in `policy/adapter` (PeftModel.from_pretrained)."""
    if ctx.accelerator.is_main_process:
        out = ctx.run_dir / "policy"
        if is_adapted(lm):
            save_merged(lm, out, ctx.task.tokenizer)
            log.info("saved the trained policy to %s (LoRA merged; the adapter alone in %s)", out, out / "adapter")
        else:
            lm.save_pretrained(out)
            ctx.task.tokenizer.save_pretrained(out)
            log.info("saved the trained policy to %s", out)
    ctx.accelerator.wait_for_everyone()


def record_training(ctx: RunContext, trainer) -> None:
    """What the results line reports about a finished training: replica checksums, the pure-half rounding share."""
    ctx.extras["param_checksums"] = trainer.checksums
    if trainer.first_update_rounding is not None:
        ctx.extras["first_update_rounding"] = trainer.first_update_rounding
