"""What every task hands to the rest of the pipeline."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import torch

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

    def at_temperature(self, temperature: float) -> Task:
        """This task with its exact oracle (where it has one) describing π_ref at `temperature`; the models, prompts
        and reward are the same objects."""
        if self.oracle is None or temperature == self.oracle.temperature:
            return self
        return replace(self, oracle=self.oracle.at_temperature(temperature, self.reference))

    def prompt_text(self, split: str, i: int) -> str:
        return self.tokenizer.decode(self.prompts(split)[i])


def prompts_digest(prompts: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]
