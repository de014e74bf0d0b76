"""What every task hands to the rest of the pipeline."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vbon_exp.rewards import Reward


@dataclass
class Task:
    name: str
    tokenizer: Any
    reference: torch.nn.Module  # π_ref: frozen, eval mode, on the run's device
    policy_init: str  # where a trainable policy is loaded from (hub id or directory)
    reward: Reward
    train_prompts: list[list[int]]  # token ids of the policy tokenizer
    test_prompts: list[list[int]]
    eos_id: int | None
    pad_id: int
    fingerprint: dict = field(default_factory=dict)  # identity of reference + reward, for cache keys
    oracle: Any = None  # exact distributions, where the task can enumerate its responses

    def prompts(self, split: str) -> list[list[int]]:
        return {"train": self.train_prompts, "test": self.test_prompts}[split]

    def prompt_text(self, split: str, i: int) -> str:
        return self.tokenizer.decode(self.prompts(split)[i])


def prompts_digest(prompts: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]


def build_task(cfg: DictConfig, device: torch.device) -> Task:
    """Instantiate conf/task/<name>.yaml's `_target_` with the task node and the run's device."""
    # the sampling temperature defines π_ref (the synthetic oracle enumerates at it), so it overrides the task default
    extra = {key: cfg[key] for key in ("model", "reward") if key in cfg}  # the real tasks' model groups
    return instantiate_clean(
        cfg.task, _convert_="object", _recursive_=False, device=device, cache_dir=cfg.paths.cache_dir,
        temperature=cfg.sampling.temperature, max_new_tokens=cfg.sampling.max_new_tokens, **extra,
    )


def instantiate_clean(node, **kwargs):
    """hydra.utils.instantiate, re-raising the target's own error: Hydra wraps it in an InstantiationException whose
    message buries the clear one a builder raised."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, Exception):
            raise err.__cause__ from None
        raise
