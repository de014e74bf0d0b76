"""What the real (language-model) tasks share: loading the policy/reference and the reward model from the `model`
and `reward` config groups (hub ids or local directories), and fingerprints for cache keys."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from vbon_exp.adapters import is_adapter_dir, load_adapted
from vbon_exp.errors import ModelLoadError
from vbon_exp.modeling import load_causal_lm, load_tokenizer, pad_token_id
from vbon_exp.rewards import build_reward
from vbon_exp.tasks.base import Task, prompts_digest

log = logging.getLogger(__name__)

_HASH_CONTENT_BELOW = 64 * 2**20  # files smaller than this are hashed by content, larger ones by size and mtime


def path_fingerprint(name_or_path: str, revision: str | None = None) -> str:
    """A hub id as itself (+ revision); a local directory by what is in it, so retraining a model invalidates the
    caches built from it."""
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return f"{name_or_path}@{revision or 'main'}"
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        h.update(f"{file.relative_to(path)}:{stat.st_size}".encode())
        h.update(file.read_bytes() if stat.st_size < _HASH_CONTENT_BELOW else str(stat.st_mtime_ns).encode())
    return f"{path.name}:{h.hexdigest()[:16]}"


def load_policy(model_cfg, device):
    """(tokenizer, frozen reference model) from the `model` group; a tokenizer without a pad token pads with EOS
    (padding is tracked by masks, so the id only needs to exist), and says so."""
    name = model_cfg.name_or_path
    require_artifact(name, model_cfg.made_by, "model.name_or_path")
    tokenizer = load_tokenizer(name, model_cfg.trust_remote_code, key="model.name_or_path")
    if tokenizer.pad_token is None:
        log.info("tokenizer of %s has no pad token: padding with EOS id %s", name, tokenizer.eos_token_id)
    dtype = getattr(torch, model_cfg.dtype) if model_cfg.dtype else None
    if is_adapter_dir(name):  # a trained LoRA adapter (e.g. an SFT run's policy/adapter): π_ref is base + adapter
        reference = load_adapted(name, device, dtype, model_cfg.trust_remote_code)
        log.info("model.name_or_path=%s is a LoRA adapter: the reference is its base with it", name)
    else:
        reference = load_causal_lm(name, device, model_cfg.trust_remote_code, dtype=dtype, key="model.name_or_path",
                                   load_in_4bit=model_cfg.load_in_4bit)
    return tokenizer, reference.eval().requires_grad_(False), pad_token_id(tokenizer)


def require_artifact(name_or_path: str, made_by: str | None, key: str) -> None:
    """Locally built models (the tiny IMDB ones) say which script makes them when they are missing."""
    if made_by and not Path(name_or_path).expanduser().exists():
        raise ModelLoadError(f"{key}={name_or_path} does not exist: make it with `{made_by}`")


def load_reward(reward_cfg, device, tokenizer):
    """The `reward` group's model (vbon_exp.rewards.REWARDS by `reward.type`), with the run's device and the policy
    tokenizer (for decoding)."""
    if getattr(reward_cfg, "name_or_path", None):
        require_artifact(reward_cfg.name_or_path, reward_cfg.made_by, "reward.name_or_path")
    return build_reward(reward_cfg, device=device, policy_tokenizer=tokenizer, eos_id=tokenizer.eos_token_id)


def check_context(reference, prompt_tokens: int, max_new_tokens: int, prompt_key: str) -> None:
    """Prompt + response must fit the model's positions (a longer sequence would fail, or silently wrap, mid-run)."""
    from vbon_exp.errors import ConfigError

    config = reference.config
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if context is not None and prompt_tokens + max_new_tokens > context:
        raise ConfigError(
            f"{prompt_key}={prompt_tokens} + sampling.max_new_tokens={max_new_tokens} exceeds the model's context "
            f"of {context} positions; lower one of them"
        )


def lm_task(name: str, model_cfg, tokenizer, reference, pad_id: int, reward_model, train: list[list[int]],
            test: list[list[int]]) -> Task:
    """A Task for a language-model policy whose prompts are already tokenized."""
    return Task(
        name=name, tokenizer=tokenizer, reference=reference, policy_init=model_cfg.name_or_path,
        reward=reward_model, train_prompts=train, test_prompts=test, eos_id=tokenizer.eos_token_id, pad_id=pad_id,
        fingerprint={"reference": path_fingerprint(model_cfg.name_or_path), "reward": reward_model.fingerprint,
                     "train_prompts": prompts_digest(train), "test_prompts": prompts_digest(test)},
    )
