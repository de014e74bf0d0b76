"""The estimates behind `plan=true`: what one run holds per GPU, and how long it takes, before anything loads.

Parameter counts come from each model's `config.json` (a local directory's, the hub cache's, or the copies in
vbon_exp/model_configs/ of the models the presets name), counted per architecture without torch
(vbon_exp/plan/architectures.py) or, for another architecture, with the model instantiated on the `meta` device: no
weights are read. Per process (= per GPU under `accelerate launch`), the plan counts:
- weights: the trained policy in float32 (LoRA: the shared base in `model.dtype` and float32 adapters), the frozen
  reference (`model.dtype`; none with LoRA), the reward model (`reward.dtype`), PPO's value head, iterative BOND's
  anchor;
- gradients and AdamW's two moments: 12 bytes per trainable parameter (all, the top `trainable_layers` blocks, or
  the adapters);
- activations of one micro-batch kept for the backward pass: floats per token, layer and hidden unit measured with
  torch's saved-tensor hooks on CPU (transformers 5.2x, eval mode, SDPA attention: GPT-2 28.5, GPT-NeoX 18.5, others
  10 + 4.6 × intermediate/hidden as Llama), × 0.55 under bf16 autocast plus its bf16 copies of the weights; with
  `train.gradient_checkpointing` 1.6 floats (each block's input) and one block's full activations;
- the vocabulary-sized log-probabilities of `train.logits_chunk` positions (5 float32 copies) and the generation's
  KV cache;
- beside the GPU: the reference caches in host memory (vbon_exp/reference.py cache_memory_bytes).
Hours come from the rates of a bench summary (`make bench`, outputs/bench/summary.json) scaled by parameters and
tokens per sample; without one, the plan says the rate is missing. An estimate, not a measurement: the test checks
it against a measured GPT-2-small-sized PPO step (within 30%)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from vbon_exp.errors import ConfigError
from vbon_exp.plan.architectures import count_parameters

BUNDLED = Path(__file__).parents[1] / "model_configs"
BENCH_SUMMARY = Path("outputs") / "bench" / "summary.json"
GB = 1e9
BYTES = {None: 4, "float32": 4, "bfloat16": 2, "float16": 2}
ACTIVATION_FLOATS = {"gpt2": 28.5, "gpt_neox": 18.5}
CHECKPOINTED_FLOATS = 1.6
AUTOCAST_ACTIVATIONS = 0.55
LOGIT_COPIES = 5
CUDA_CONTEXT = 0.6 * GB  # CUDA context and allocator reserve, beside the tensors


@dataclass
class Shape:
    """What the plan reads from a model's config.json."""

    source: str
    params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    model_type: str
    saved_dtype: Optional[str]
    block_params: int  # parameters of one transformer block

    def activation_floats(self) -> float:
        """Floats per token, layer and hidden unit kept for the backward pass (float32, no checkpointing)."""
        return ACTIVATION_FLOATS.get(self.model_type, 10 + 4.6 * self.intermediate / self.hidden)


def read_config(name_or_path: str, key: str, trust_remote_code: bool = False, made_by: Optional[str] = None) -> dict:
    """The config.json of `name_or_path` as a dict, without its weights: a local directory's (an adapter's base for a
    LoRA adapter), a bundled copy for the presets' hub models (and for a locally built model not built yet: the
    architecture its `made_by` script builds by default), else the hub cache (through transformers)."""
    path = Path(str(name_or_path)).expanduser()
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        return read_config(base, key, trust_remote_code)
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    name = path.name if made_by else str(name_or_path).replace("/", "--")
    bundled = BUNDLED / f"{name}.json"
    if bundled.is_file():
        return json.loads(bundled.read_text())
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code).to_dict()
    except Exception as err:  # offline and not cached, or a typo
        raise ConfigError(f"{key}={name_or_path}: no config.json found (local directory, bundled copy in "
                          f"{BUNDLED}, or the hub cache): the plan needs the architecture "
                          f"({type(err).__name__})") from None


def shape_of(config: dict, source: str, classifier: bool = False) -> Shape:
    """What the plan reads from `config` (a config.json as a dict): parameter counts by architecture
    (vbon_exp/plan/architectures.py), else of the model instantiated on the meta device (no memory, no weights)."""
    text = config.get("text_config") or config
    layers = int(_first(text, "num_hidden_layers", "n_layer", "n_layers"))
    hidden = int(_first(text, "hidden_size", "n_embd", "dim"))
    inner = _first(text, "intermediate_size", "n_inner", "hidden_dim", default=None) or 4 * hidden
    counted = count_parameters(config, classifier) or meta_count(config, classifier, layers)
    dtype = config.get("torch_dtype") or config.get("dtype")
    return Shape(source, counted[0], layers, hidden, int(inner), int(text["vocab_size"]), str(config["model_type"]),
                 str(dtype).replace("torch.", "") if dtype else None, counted[1])


def meta_count(config: dict, classifier: bool, layers: int) -> tuple[int, int]:
    """(parameters, parameters of one block) of the model instantiated on the meta device by transformers."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoModelForSequenceClassification

    data = dict(config)
    hf_config = CONFIG_MAPPING[data.pop("model_type")](**data)
    with torch.device("meta"):
        model = (AutoModelForSequenceClassification if classifier else AutoModelForCausalLM).from_config(hf_config)
    params = sum(p.numel() for p in model.parameters())
    block = next((m for name, m in model.named_modules() if name.endswith((".h.0", ".layers.0", ".layer.0"))), None)
    return params, sum(p.numel() for p in block.parameters()) if block is not None else params // max(layers, 1)


def _first(config: dict, *names, default=0):
    for name in names:
        value = config.get(name)
        if value is not None:
            return value
    return default


# --------------------------------------------------------------------------- memory of one training step


@dataclass
class Step:
    """One training step's shape, per process."""

    kind: str  # rl | sft | preference | inference
    rollout: int  # sequences sampled at once (RL: the local batch; others: the evaluation's sampler batch)
    micro: int  # sequences per forward/backward pass
    prompt_tokens: int
    new_tokens: int
    trainable_layers: Optional[int] = None
    value_head: bool = False
    anchor: bool = False  # iterative BOND's float32 copy of the policy


def memory(policy: Shape, reward: Optional[Shape], step: Step, train, model_dtype: Optional[str],
           reward_dtype: Optional[str], device: str = "cuda") -> dict[str, float]:
    """Bytes per process by part (module docstring): weights, optimizer, activations, logits, kv_cache, overhead."""
    lora = train.lora.enabled and step.kind != "inference"
    half = BYTES[model_dtype or policy.saved_dtype]
    parts = {"reference": policy.params * half, "reward": reward.params * BYTES[reward_dtype or reward.saved_dtype]
             if reward is not None else 0.0}
    trained_layers = policy.layers
    if step.kind == "inference":
        trainable = 0
    elif lora:
        trainable = lora_params(policy, train.lora.rank, step.trainable_layers)
        parts["policy"] = trainable * 4.0  # adapters; the base is the reference's weights
    else:
        trained_layers = step.trainable_layers or policy.layers
        trainable = policy.params if step.trainable_layers is None else trained_layers * policy.block_params
        parts["policy"] = policy.params * (BYTES[model_dtype or policy.saved_dtype] if train.pure_half_precision
                                           else 4.0)
    if step.value_head:
        parts["value_head"] = (policy.hidden + 1) * 16.0
    if step.anchor:
        parts["anchor"] = policy.params * 4.0
    parts["gradients + AdamW"] = trainable * 12.0
    parts["activations"] = activation_bytes(policy, step, train, trained_layers) if trainable else 0.0
    positions = step.micro * step.new_tokens
    chunk = train.logits_chunk or positions
    parts["logits"] = min(chunk, positions) * policy.vocab * 4.0 * LOGIT_COPIES
    parts["kv_cache"] = 2.0 * policy.layers * policy.hidden * (step.prompt_tokens + step.new_tokens) * step.rollout * (
        2 if train.mixed_precision != "no" else half)
    parts["overhead"] = CUDA_CONTEXT if device == "cuda" else 0.0
    return parts


def lora_params(shape: Shape, rank: int, trainable_layers: Optional[int]) -> int:
    """Adapter parameters: rank × (in + out) of every linear layer in the adapted blocks, ≈ 12·h per block for a
    GPT-style block with a 4h MLP (q, k, v, o and the two MLP projections; exact counts for the run itself)."""
    layers = trainable_layers or shape.layers
    per_block = rank * (4 * 2 * shape.hidden + 2 * (shape.hidden + shape.intermediate))
    return layers * per_block


def activation_bytes(shape: Shape, step: Step, train, trained_layers: int) -> float:
    tokens = step.micro * (step.prompt_tokens + step.new_tokens) * (2 if step.kind == "preference" else 1)
    per_layer = tokens * shape.hidden * shape.activation_floats() * 4.0
    autocast = train.mixed_precision != "no"
    if autocast:
        per_layer *= AUTOCAST_ACTIVATIONS
    if train.gradient_checkpointing:
        kept = tokens * shape.hidden * CHECKPOINTED_FLOATS * (2 if autocast else 4) * trained_layers + per_layer
    else:
        kept = per_layer * trained_layers
    weight_copies = 2.0 * shape.block_params * trained_layers if autocast else 0.0
    return kept + weight_copies


# --------------------------------------------------------------------------- hours


def bench_rates(path: Path = BENCH_SUMMARY) -> Optional[dict]:
    """The bench's rates and what they were measured on, or None without a summary."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    settings, machine = summary.get("settings", {}), summary.get("machine", {})
    params = summary.get("bench_model_params")  # the PPO and cache sections' model (written since the plan reads it)
    if not params:
        return None
    return {"ppo_episodes_per_s": summary.get("ppo_episodes_per_s"),
            "cache_samples_per_s": summary.get("cache_samples_per_s"), "params": params,
            "episode_tokens": settings.get("prompt_len", 16) + settings.get("new_tokens", 48),
            "sample_tokens": settings.get("prompt_len", 16) + settings.get("cache_new_tokens", 8),
            "where": machine.get("gpu") or f"{machine.get('cpus')} CPUs ({summary.get('device')})",
            "dtype": summary.get("dtype"), "ppo_epochs": settings.get("ppo_epochs", 4)}


# An update's work in forward passes of the whole policy: sampling its episodes ≈ 2 (measured share of a CPU PPO step,
# left as a constant), the reference's and the old policy's log-probs 2, and per epoch one forward plus a backward
# pass of twice a forward through the share of blocks that get gradients (LoRA or trainable_layers: the top k).
SAMPLING_PASSES, LOGPROB_PASSES = 2.0, 2.0


def update_work(epochs: float, trained_share: float) -> float:
    return SAMPLING_PASSES + LOGPROB_PASSES + epochs * (1.0 + 2.0 * trained_share)


def update_work_ratio(rates: dict, epochs: float, trained_share: float) -> float:
    """A run's update work over the bench's PPO step's (its `ppo_epochs`, every block trained): how the bench's
    episode rate scales to the run's algorithm (RLOO's one epoch, LoRA on the top blocks)."""
    return update_work(epochs, trained_share) / update_work(rates.get("ppo_epochs", 4), 1.0)


def hours(rates: Optional[dict], policy: Shape, episodes: float, samples: float, tokens: int,
          work_ratio: float = 1.0) -> Optional[float]:
    """Training episodes at the bench's PPO rate (times `work_ratio`: update_work_ratio) and samples at its cache
    rate, scaled by parameters × tokens."""
    if not rates or not rates.get("ppo_episodes_per_s") or not rates.get("cache_samples_per_s"):
        return None
    size = policy.params / rates["params"]
    train_s = episodes / rates["ppo_episodes_per_s"] * size * tokens / rates["episode_tokens"] * work_ratio
    sample_s = samples / rates["cache_samples_per_s"] * size * tokens / rates["sample_tokens"]
    return (train_s + sample_s) / 3600
