"""Loading causal LMs and tokenizers (hub id or local directory), and the forward passes every module shares:
one cached decoding step, and per-token log-probs of given responses."""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field

import torch

from vbon_exp.errors import ModelLoadError
from vbon_exp.settings.model import ModelConfig  # noqa: F401  (its settings; re-exported)

log = logging.getLogger(__name__)


def quiet_transformers() -> None:
    """transformers draws a progress bar per weight load/save; a run loads several tiny models, so mute them."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load_error(kind: str, name_or_path: str, err: Exception, key: str | None = None) -> ModelLoadError:
    looks_local = name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path and os.path.exists(
        os.path.dirname(name_or_path) or "."
    )
    if looks_local and not os.path.exists(os.path.expanduser(name_or_path)):
        hint = f"the local path {name_or_path!r} does not exist"
    else:
        where = key or "the config key naming it"
        hint = (
            f"{name_or_path!r} is neither a local directory nor reachable on the model hub. Offline: save it "
            f"elsewhere with `save_pretrained`, copy the directory here and set {where}=<that directory> "
            "(HF_HUB_OFFLINE=1 makes hub look-ups fail at once instead of retrying)"
        )
    return ModelLoadError(f"could not load {kind} {name_or_path!r}: {hint}. Original error: {type(err).__name__}: {err}")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, key: str | None = None):
    from transformers import AutoTokenizer

    if trust_remote_code:
        log.warning("trust_remote_code=True for tokenizer %s: its repository code will run", name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as err:  # hub/file errors come in many types; re-raise one that names the path
        raise _load_error("tokenizer", name_or_path, err, key) from err


def quantization_config(load_in_4bit: bool, device: torch.device, key: str):
    """bitsandbytes NF4 (double quantisation, bf16 compute) for frozen models on a GPU; None when off."""
    if not load_in_4bit:
        return None
    from vbon_exp.errors import ConfigError

    if device.type != "cuda":
        raise ConfigError(f"{key}=true needs a CUDA GPU (the run's device is {device})")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise ConfigError(f"{key}=true needs the bitsandbytes package: pip install bitsandbytes") from err
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16)


def load_causal_lm(name_or_path: str, device: torch.device, trust_remote_code: bool = False, dtype=None,
                   key: str | None = None, load_in_4bit: bool = False):
    """A causal LM on `device`; with load_in_4bit (frozen models only) quantised by bitsandbytes on the GPU."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    if trust_remote_code:
        log.warning("trust_remote_code=True for model %s: its repository code will run", name_or_path)
    quant = quantization_config(load_in_4bit, device, "model.load_in_4bit")
    extra = {"quantization_config": quant, "device_map": {"": device.index or 0}} if quant else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, dtype=dtype, use_safetensors=None, **extra
        )
    except Exception as err:
        raise _load_error("model", name_or_path, err, key) from err
    return model if quant else model.to(device)


def pad_token_id(tokenizer) -> int:
    """The id used for padded positions. Padding is always tracked by masks, never by comparing ids, so any id
    inside the vocabulary works; GPT-2 style tokenizers have none and use EOS (logged once by the task)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


# --------------------------------------------------------------------------- forward passes

def signature_model(model):
    """The model whose forward says which keywords the model takes: itself, or the transformers model inside a
    wrapper (a peft model, the reference's adapter view), whose own forward passes every keyword through."""
    if hasattr(model, "signature_model"):
        return model.signature_model()
    if hasattr(model, "get_base_model"):  # peft
        return model.get_base_model()
    return model


def backbone_and_head(model):
    """(the transformer body, whose `last_hidden_state` feeds the LM head; the head as a function hidden -> logits,
    with a final logit soft-capping where the model has one), for a transformers causal LM, a peft model (the body
    and head carry its adapters) or a wrapper that gives its own (`backbone_and_head()`)."""
    if hasattr(model, "backbone_and_head"):
        return model.backbone_and_head()
    inner = signature_model(model)
    body, head = getattr(inner, inner.base_model_prefix), inner.get_output_embeddings()
    cap = getattr(inner.config, "final_logit_softcapping", None)
    if not cap:
        return body, head
    return body, (lambda hidden: torch.tanh(head(hidden) / cap) * cap)


_CACHE_KWARG: dict[type, str] = {}


def _cache_kwarg(model) -> str:
    """transformers ≥ 5.2x calls the KV cache `cache`; older versions `past_key_values`."""
    inner = signature_model(model)
    cls = type(inner)
    if cls not in _CACHE_KWARG:
        params = inspect.signature(inner.forward).parameters
        _CACHE_KWARG[cls] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_KWARG[cls]


_KEEP_KWARG: dict[type, str | None] = {}


def _logits_to_keep_kwarg(model) -> str | None:
    """The keyword that restricts the LM head to the last positions (`logits_to_keep`, `num_logits_to_keep` in older
    transformers), or None where the model has neither."""
    inner = signature_model(model)
    cls = type(inner)
    if cls not in _KEEP_KWARG:
        params = inspect.signature(inner.forward).parameters
        _KEEP_KWARG[cls] = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return _KEEP_KWARG[cls]


def decode_step(model, input_ids, attention_mask, position_ids, cache):
    """One cached forward pass: (logits of the last position [B, V], new cache); the LM head sees only the last
    position where the model allows it (the prompt pass would otherwise project every prompt position)."""
    kwargs = {_cache_kwarg(model): cache}
    keep = _logits_to_keep_kwarg(model)
    if keep is not None:
        kwargs[keep] = 1
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, **kwargs
    )
    new_cache = out.get("cache", None)
    if new_cache is None:
        new_cache = out.get("past_key_values", None)
    return out.logits[:, -1], new_cache


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at the first real token; padded slots get 0 (they are masked)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Samples:
    """A batch of (prompt, response) pairs. Padding is described by the masks alone.

    prompt_ids are left-padded, response_ids right-padded; response_mask is 1 on every generated token up to and
    including EOS. `rewards` is filled once the pairs are scored, so nothing is scored twice."""

    prompt_index: torch.Tensor  # [B] index into the prompt list the samples were drawn for
    prompt_ids: torch.Tensor  # [B, Lp]
    prompt_mask: torch.Tensor  # [B, Lp]
    response_ids: torch.Tensor  # [B, Lr]
    response_mask: torch.Tensor  # [B, Lr]
    rewards: torch.Tensor | None = None  # [B] float32
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.prompt_index.shape[0])

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)

    def select(self, idx: torch.Tensor | slice) -> "Samples":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Samples(
            pick(self.prompt_index), pick(self.prompt_ids), pick(self.prompt_mask), pick(self.response_ids),
            pick(self.response_mask), pick(self.rewards), {k: pick(v) for k, v in self.extras.items()},
        )

    def to(self, device) -> "Samples":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Samples(
            mv(self.prompt_index), mv(self.prompt_ids), mv(self.prompt_mask), mv(self.response_ids),
            mv(self.response_mask), mv(self.rewards), {k: mv(v) for k, v in self.extras.items()},
        )

    @staticmethod
    def cat(parts: list["Samples"], pad_id: int) -> "Samples":
        """Concatenate batches with different prompt/response widths (re-padding left and right)."""
        lp = max(p.prompt_ids.shape[1] for p in parts)
        lr = max(p.response_ids.shape[1] for p in parts)

        def left(t, width, value):
            return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

        def right(t, width, value):
            return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

        has_rewards = all(p.rewards is not None for p in parts)
        keys = set.intersection(*(set(p.extras) for p in parts)) if parts else set()
        return Samples(
            torch.cat([p.prompt_index for p in parts]),
            torch.cat([left(p.prompt_ids, lp, pad_id) for p in parts]),
            torch.cat([left(p.prompt_mask, lp, 0) for p in parts]),
            torch.cat([right(p.response_ids, lr, pad_id) for p in parts]),
            torch.cat([right(p.response_mask, lr, 0) for p in parts]),
            torch.cat([p.rewards for p in parts]) if has_rewards else None,
            {k: torch.cat([p.extras[k] for p in parts]) for k in keys},
        )


def response_logits(model, samples: Samples, temperature: float, *, with_hidden: bool = False):
    """Temperature-scaled log-softmax over the vocabulary at every response position: [B, Lr, V], computed in
    float32 (float64 models stay float64), all at once: the plain computation that vbon_exp/logprobs.py does in
    chunks of positions (the pipeline reads log-probabilities there; this is the yardstick its tests compare with).

    The logits that predict response token t sit at input position Lp − 1 + t. With `with_hidden`, also the last
    hidden state at those positions [B, Lr, H] (the PPO value head reads it)."""
    ids = torch.cat([samples.prompt_ids, samples.response_ids], dim=1)
    mask = torch.cat([samples.prompt_mask, samples.response_mask], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False,
                output_hidden_states=with_hidden)
    lp, lr = samples.prompt_ids.shape[1], samples.response_ids.shape[1]
    window = slice(lp - 1, lp - 1 + lr)  # the positions that predict response tokens
    logits = out.logits[:, window]
    logits = (logits if logits.dtype == torch.float64 else logits.float()) / temperature
    log_dist = torch.log_softmax(logits, dim=-1)
    if with_hidden:
        return log_dist, out.hidden_states[-1][:, window]
    return log_dist


def token_log_probs(log_dist: torch.Tensor, samples: Samples) -> torch.Tensor:
    """log π(y_t | x, y_<t) of the sampled tokens, zero on padding: [B, Lr]."""
    lp = log_dist.gather(-1, samples.response_ids.unsqueeze(-1)).squeeze(-1)
    return lp * samples.response_mask
