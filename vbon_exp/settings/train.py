"""conf `train:` (every trainer), `sft:` (BoN-SFT's loop) and `preference:` (DPO, IPO, BoNBoN's loop):
vbon_exp/trainers/shared.py, sft.py, preference_loop.py; `train.lora`: vbon_exp/adapters.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional, Union

from vbon_exp.errors import ConfigError, check_choice, check_number

log = logging.getLogger(__name__)

@dataclass
class LoraSettings:
    """conf `train.lora`: LoRA adapters on the trained policy (peft). rank 0 = off: the policy is trained whole."""

    # Rank r of the adapters (0 = no LoRA).
    rank: int = 0
    # Scale α: an adapter adds (α/r)·B·A to its layer's weight (null = 2·rank).
    alpha: Optional[float] = None
    # Dropout on the adapters' input in the supervised loops (SFT, preference; masks drawn from (seed, step), so a
    # resumed run repeats an uninterrupted one); 0 for the RL objectives, whose importance ratios need the rollout's
    # and the update's policy to be one function.
    dropout: float = 0.0
    # The layers that get adapters: [all-linear] (every linear layer but the LM head) or module names (GPT-2:
    # [c_attn, c_proj, c_fc]; Llama: [q_proj, k_proj, v_proj, o_proj, ...]).
    target_modules: List[str] = field(default_factory=lambda: ["all-linear"])

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def check(self, prefix: str = "train.lora") -> None:
        check_number(f"{prefix}.rank", self.rank, integer=True, minimum=0)
        check_number(f"{prefix}.alpha", self.alpha, exclusive_min=0, allow_none=True)
        check_number(f"{prefix}.dropout", self.dropout, minimum=0, maximum=1)
        if not self.target_modules:
            raise ConfigError(f"{prefix}.target_modules is empty: [all-linear] or the names of modules")


@dataclass
class TrainConfig:
    """conf `train:`: the training-loop settings every trainer (RL, SFT, preference) shares."""

    # Updates (RL) or optimizer steps (SFT) between checkpoints in <run_dir>/checkpoints (0 = only at the end).
    checkpoint_every: int = 50
    # auto: continue from <run_dir>/checkpoints when one exists; true: require one; false: start fresh.
    resume: Union[str, bool] = "auto"
    # Updates between wandb training logs (≥ 1).
    log_every: int = 1
    # Stop after this many updates (null = the full run; the learning-rate schedule always spans the full run).
    max_updates: int | None = None
    # Autocast precision of the trained policy's forward passes (and the reference's, the sampler's), through
    # accelerate: no | bf16 | fp16 (CUDA only; with a loss scaler). The optimiser always holds float32 weights
    # (TRL/transformers: bf16=True / fp16=True).
    mixed_precision: str = "no"
    # Go on with bf16 (train.mixed_precision=bf16, or a bf16 model.dtype / reward.dtype) on a CPU that has no bf16
    # instructions, where it runs ~20× slower than float32 (vbon_exp/cpu_features.py). Off: such a run stops before
    # loading anything, saying so.
    allow_slow_bf16: bool = False
    # TF32 matmuls on CUDA (10-bit mantissa inputs, float32 accumulation; torch's fp32_precision="tf32").
    tf32: bool = True
    # Train the policy in the dtype of `model.dtype` (or as saved) without float32 master weights. Off: the policy
    # is loaded in float32 whatever its checkpoint's dtype (a bf16 weight of size ~0.02 cannot move by lr 3e-6: most
    # updates round away). On: logs the fraction of the first update's weight changes that rounded to nothing.
    pure_half_precision: bool = False
    # Recompute each transformer block's activations in the backward pass instead of keeping them (transformers'
    # activation checkpointing; TRL's gradient_checkpointing), in every training loop.
    gradient_checkpointing: bool = False
    # LoRA adapters on the policy instead of training its weights (TRL's peft_config): vbon_exp/adapters.py.
    lora: LoraSettings = field(default_factory=LoraSettings)
    # Response positions (over the batch) whose vocabulary-sized log-probabilities are held at once when computing
    # log-probs, entropies and KLs (vbon_exp/logprobs.py); 0 = all at once.
    logits_chunk: int = 1024

    def check(self, prefix: str = "train") -> None:
        if self.resume not in ("auto", True, False):
            raise ConfigError(f"{prefix}.resume must be auto, true or false, got {self.resume!r}")
        check_number(f"{prefix}.checkpoint_every", self.checkpoint_every, integer=True, minimum=0)
        check_number(f"{prefix}.log_every", self.log_every, integer=True, minimum=1)
        check_number(f"{prefix}.max_updates", self.max_updates, integer=True, minimum=0, allow_none=True)
        check_choice(f"{prefix}.mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        check_number(f"{prefix}.logits_chunk", self.logits_chunk, integer=True, minimum=0)
        self.lora.check(f"{prefix}.lora")

    def check_device(self, device, prefix: str = "train", frozen_dtypes: Optional[dict] = None) -> None:
        """Settings the device must support, checked once it is known (before any model loads). `frozen_dtypes`:
        config key -> the dtype it asks for the frozen models (model.dtype, reward.dtype)."""
        if self.mixed_precision == "fp16" and device.type != "cuda":
            raise ConfigError(f"{prefix}.mixed_precision=fp16 needs a CUDA device (device={device}); use bf16 on CPU")
        if device.type == "cpu":
            asks = [f"{prefix}.mixed_precision=bf16"] if self.mixed_precision == "bf16" else []
            asks += [f"{key}=bfloat16" for key, dtype in (frozen_dtypes or {}).items() if dtype == "bfloat16"]
            check_cpu_bf16(asks, self.allow_slow_bf16, f"{prefix}.allow_slow_bf16")


@dataclass
class SupervisedLoopConfig:
    """What the offline loops share (`sft:` for BoN-SFT, `preference:` for DPO/IPO/BoNBoN): AdamW over epochs of a
    fixed data set. Each loop's dataclass subclasses this, adding its data keys and its own defaults."""

    # AdamW learning rate (> 0).
    lr: float = 1e-5
    # AdamW epsilon (> 0).
    adam_eps: float = 1e-5
    # AdamW weight decay (≥ 0).
    weight_decay: float = 0.0
    # Learning-rate schedule: linear (decay to 0 over training) | constant.
    schedule: str = "linear"
    # Passes over the data (≥ 1).
    epochs: int = 1
    # Examples (sequences or pairs) per optimizer step, per process (≥ 1).
    batch_size: int = 32
    # Gradient-norm clipping (null = off).
    max_grad_norm: Optional[float] = 1.0
    # Train only the top k transformer blocks and the final norm (null = all), as algo.trainable_layers.
    trainable_layers: Optional[int] = None

    def check(self, prefix: str) -> None:
        check_number(f"{prefix}.lr", self.lr, exclusive_min=0)
        check_number(f"{prefix}.adam_eps", self.adam_eps, exclusive_min=0)
        check_number(f"{prefix}.weight_decay", self.weight_decay, minimum=0)
        check_choice(f"{prefix}.schedule", self.schedule, ("linear", "constant"))
        check_number(f"{prefix}.epochs", self.epochs, integer=True, minimum=1)
        check_number(f"{prefix}.batch_size", self.batch_size, integer=True, minimum=1)
        check_number(f"{prefix}.max_grad_norm", self.max_grad_norm, exclusive_min=0, allow_none=True)
        check_number(f"{prefix}.trainable_layers", self.trainable_layers, integer=True, minimum=1, allow_none=True)


@dataclass
class SFTConfig(SupervisedLoopConfig):
    """conf `sft:`: the supervised fine-tuning loop (BoN-SFT), as `algo:` is the RL loop (the optimiser keys and their
    defaults: SupervisedLoopConfig)."""

    # BoN responses drawn per training prompt for BoN-SFT's fine-tuning set (≥ 1).
    samples_per_prompt: int = 1

    def check(self, prefix: str = "sft") -> None:
        super().check(prefix)
        check_number(f"{prefix}.samples_per_prompt", self.samples_per_prompt, integer=True, minimum=1)


@dataclass
class PreferenceTrainConfig(SupervisedLoopConfig):
    """conf `preference:`: the offline preference-optimisation loop of DPO, IPO and BoNBoN, as `algo:` is the RL
    loop and `sft:` the supervised one (the optimiser keys: SupervisedLoopConfig; batch_size counts pairs)."""

    # AdamW learning rate (> 0).
    lr: float = 5e-6
    # AdamW epsilon (> 0).
    adam_eps: float = 1e-8
    # Pairs per train prompt, each the (best, worst) of its own n samples (the pair sample cache holds n × this).
    pairs_per_prompt: int = 1

    def check(self, prefix: str = "preference") -> None:
        super().check(prefix)
        check_number(f"{prefix}.pairs_per_prompt", self.pairs_per_prompt, integer=True, minimum=1)


def check_cpu_bf16(asks: list[str], insist: bool, insist_key: str) -> None:
    """bf16 on a CPU without bf16 instructions stops with one line (the slowdown to expect) unless the user insists;
    insisting logs the same as a warning."""
    from vbon_exp.cpu_features import EMULATED_BF16_SLOWDOWN, cpu_bf16_native, cpu_description

    if not asks or cpu_bf16_native():
        return
    message = (f"{', '.join(asks)} on this CPU ({cpu_description()}): bf16 is emulated here and runs about "
               f"{EMULATED_BF16_SLOWDOWN:.0f}× slower than float32")
    if not insist:
        raise ConfigError(f"{message}; keep float32 (train.mixed_precision=no, model.dtype=null), or set "
                          f"{insist_key}=true to run it anyway")
    log.warning("%s; going on because %s=true", message, insist_key)
