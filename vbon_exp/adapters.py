"""LoRA adapters on the trained policy (`train.lora`, the `peft` package), with the reference as the same base.

`attach_lora` puts trainable low-rank adapters on a frozen base model (TRL's `peft_config`, PEFT's LoraConfig): only
they (and PPO's value head) are trained, and the reference π_ref needs no second copy of the weights — it is the
base itself, read through a view:
- a base without adapters of its own: the policy's adapter disabled (`AdapterView(model, None)`);
- a base that already carries a trained adapter (training continues from it, e.g. an SFT adapter): that adapter,
  frozen, as "reference", and a trainable copy of it as the policy's adapter. Disabling the policy's adapter would
  silently give the base without the SFT adapter, a different π_ref; the view activates "reference" instead.
`merged_state_dict` gives the policy's weights with its adapter merged in (the saved `policy/` and what vLLM
loads), computed per layer without touching the model, so the base — the reference — is never modified."""

from __future__ import annotations

import logging
import shutil
import warnings
from contextlib import contextmanager
from typing import Optional

import torch
from torch import nn

from vbon_exp.errors import ConfigError
from vbon_exp.settings.train import LoraSettings  # noqa: F401  (its settings; re-exported)

log = logging.getLogger(__name__)

POLICY, REFERENCE = "policy", "reference"  # adapter names


def is_adapted(model) -> bool:
    """Whether `model` is a peft model (carries adapters)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def peft_config(settings: LoraSettings, model, layers: Optional[list[int]] = None):
    """PEFT's LoraConfig for `settings` on `model`, adapting only the transformer blocks `layers` when given."""
    from peft import LoraConfig

    targets = list(settings.target_modules)
    if targets == ["all-linear"]:  # peft's own "all-linear" cannot be combined with layers_to_transform
        targets = "all-linear" if layers is None else linear_module_names(model)
    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha or 2 * settings.rank, lora_dropout=settings.dropout,
                      target_modules=targets, layers_to_transform=layers, bias="none", task_type="CAUSAL_LM",
                      fan_in_fan_out=uses_conv1d(model))  # GPT-2's projections are Conv1D: weights stored (in, out)


def linear_module_names(model) -> list[str]:
    """The names (last component) of every linear layer but the LM head: what peft's "all-linear" adapts."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, (nn.Linear, Conv1D)) and m is not head})


def attach_lora(base, settings: LoraSettings, layers: Optional[list[int]] = None, seed: int = 0):
    """The policy: `base` with a trainable LoRA adapter "policy" (only adapter weights require grad), and the view
    of the reference on the same weights. A `base` that is a peft model already (a trained adapter loaded as the
    reference) gets a trainable copy of that adapter; any other base a fresh adapter (B = 0: at initialisation the
    policy is the reference exactly; A drawn from `seed` alone, so a run and its resumed twin start alike)."""
    from peft import get_peft_model

    if is_adapted(base):
        (name,) = list(base.peft_config)  # the adapter the reference was trained with
        base.load_adapter(_adapter_dir(base, name), adapter_name=POLICY, is_trainable=True)
        base.set_adapter(POLICY)
        _freeze_all_but(base, POLICY)
        log.info("LoRA: training continues from the adapter %r of %s; the reference is a frozen copy of it (not the "
                 "base: disabling the adapter would give another π_ref)%s", name, _source(base),
                 "; trainable_layers is not applied: the adapter keeps its own layers" if layers else "")
        return base, AdapterView(base, name)
    config = peft_config(settings, base, layers)
    with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing` (peft ≤ 0.21)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = get_peft_model(base, config, adapter_name=POLICY)
    log.info("LoRA: rank %d, α %g on %s of %s (%d trainable parameters of %d); the reference is the same base with the "
             "adapter disabled", settings.rank, settings.alpha or 2 * settings.rank, ",".join(settings.target_modules),
             _source(base), sum(p.numel() for p in model.parameters() if p.requires_grad),
             sum(p.numel() for p in model.parameters()))
    return model, AdapterView(model, None)


def uses_conv1d(model) -> bool:
    """Whether the model's projections are transformers' Conv1D (GPT-2), whose weights are stored (in, out)."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) for m in model.modules())


def _source(model) -> str:
    return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)


def _adapter_dir(model, name: str) -> str:
    path = getattr(model.peft_config[name], "base_model_name_or_path", None)
    source = getattr(model, "adapter_source", None)
    if source is None:
        raise ConfigError(f"LoRA on a model that already carries the adapter {name!r}: its directory is unknown "
                          f"(load it with vbon_exp.adapters.load_adapted; base {path})")
    return source


def _freeze_all_but(model, adapter: str) -> None:
    for pname, p in model.named_parameters():
        p.requires_grad_(f".{adapter}." in pname)


def load_adapted(adapter_dir: str, device, dtype=None, trust_remote_code: bool = False):
    """A base model with the trained adapter of `adapter_dir` (peft layout: adapter_config.json) as "reference",
    frozen: the reference of a run whose policy starts from that adapter."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    config = PeftConfig.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, dtype=dtype,
                                                trust_remote_code=trust_remote_code).to(device)
    model = PeftModel.from_pretrained(base, adapter_dir, adapter_name=REFERENCE, is_trainable=False)
    model.adapter_source = adapter_dir
    return model.eval().requires_grad_(False)


def is_adapter_dir(path: str) -> bool:
    from pathlib import Path

    return (Path(path).expanduser() / "adapter_config.json").is_file()


class AdapterView(nn.Module):
    """The reference read through the policy's peft model: every forward runs with the policy's adapter disabled
    (`adapter` None) or with the reference's own adapter active. No weights of its own."""

    def __init__(self, model, adapter: Optional[str]):
        super().__init__()
        self.peft = model
        self.adapter = adapter
        self.config = model.config

    @contextmanager
    def active(self):
        if self.adapter is None:
            with self.peft.disable_adapter():
                yield
            return
        current = self.peft.active_adapter
        self.peft.base_model.set_adapter(self.adapter)
        try:
            yield
        finally:
            self.peft.base_model.set_adapter(current)
            _freeze_all_but(self.peft, current)  # set_adapter marks the active adapter trainable: undo it

    def forward(self, *args, **kwargs):
        with self.active():
            return self.peft(*args, **kwargs)

    def signature_model(self):
        """The model whose forward signature the sampler reads (cache / logits_to_keep keywords)."""
        return self.peft.get_base_model()

    def backbone_and_head(self):
        """(the transformer body, the LM head), each run with the reference's adapters."""
        inner = self.peft.get_base_model()
        backbone, head = getattr(inner, inner.base_model_prefix), inner.get_output_embeddings()

        def body(*args, **kwargs):
            with self.active():
                return backbone(*args, **kwargs)

        def logits(hidden):
            with self.active():
                return head(hidden)

        return body, logits


@torch.no_grad()
def merged_state_dict(model, dtype: Optional[torch.dtype] = None, adapter: Optional[str] = None
                      ) -> dict[str, torch.Tensor]:
    """The weights of `model` (a peft model) with its active adapter merged in, under the base model's own names
    (loadable by from_pretrained), computed layer by layer without modifying the model; other weights are the model's
    own tensors (no copy). `dtype`: the merged layers' dtype (default: the base's); `adapter`: which adapter (default:
    the active one)."""
    from peft.tuners.lora import LoraLayer

    inner = model.get_base_model()
    adapter = adapter or model.active_adapter
    merged = {}
    for name, module in inner.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            delta = module.get_delta_weight(adapter).to(torch.float32)
            merged[f"{name}.weight"] = (base.weight.to(torch.float32) + delta).to(dtype or base.weight.dtype)
            if getattr(base, "bias", None) is not None:
                merged[f"{name}.bias"] = base.bias
    out = {}
    for key, tensor in inner.state_dict(keep_vars=False).items():
        if "lora_" in key:
            continue
        clean = key.replace(".base_layer.", ".")
        out[clean] = merged.get(clean, tensor)
    return out


def policy_weights(model) -> dict[str, torch.Tensor]:
    """The policy's weights under a plain model's names: its state dict, or a peft model's with the adapter merged."""
    return merged_state_dict(model) if is_adapted(model) else model.state_dict()


def served_weights(model):
    """(name, tensor) of the weights a serving engine (vLLM) must hold for `model` under a plain model's names: a
    plain model's parameters, a peft model's with its adapter merged, the reference view's with its adapter (or the
    base's alone, which the engine loaded from the model's directory: nothing to push)."""
    if isinstance(model, AdapterView):
        if model.adapter is None:
            return iter(())
        return iter(merged_state_dict(model.peft, adapter=model.adapter).items())
    if is_adapted(model):
        return iter(merged_state_dict(model).items())
    return ((name, p.data) for name, p in model.named_parameters())


def save_merged(model, directory, tokenizer=None) -> None:
    """`directory`: the policy with its adapter merged, in save_pretrained layout (from_pretrained loads it like any
    model), and the adapter itself in `directory`/adapter (PeftModel.from_pretrained(base, that) loads it)."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    name = model.active_adapter
    staging = directory / ".adapter.tmp"  # peft writes an adapter not named "default" to <dir>/<name>
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, selected_adapters=[name])
    shutil.rmtree(directory / "adapter", ignore_errors=True)
    (staging / name).rename(directory / "adapter")
    shutil.rmtree(staging)
    inner = model.get_base_model()
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(inner.config)
    plain.load_state_dict(merged_state_dict(model), assign=True, strict=False)
    plain.tie_weights()
    plain.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
        tokenizer.save_pretrained(directory / "adapter")  # the adapter directory is a model.name_or_path too
