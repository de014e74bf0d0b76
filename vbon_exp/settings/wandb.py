"""conf `wandb:` (vbon_exp/tracking.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from vbon_exp.errors import ConfigError

WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class WandbConfig:
    """conf `wandb:` (Weights & Biases). The local results.jsonl is written whatever the mode."""

    # online | offline | disabled | null (auto: $WANDB_MODE, else online with an API key, else offline).
    mode: Optional[str] = None
    # wandb project name.
    project: str = "vbon_exp"
    # wandb entity (team or user); null = your default.
    entity: Optional[str] = None
    # Run group, e.g. a sweep's name.
    group: Optional[str] = None
    # Extra run tags (list of strings).
    tags: List[str] = field(default_factory=list)

    def check(self, prefix: str = "wandb") -> None:
        if self.mode not in (None, *WANDB_MODES):
            raise ConfigError(f"{prefix}.mode must be online, offline, disabled or null (auto), got {self.mode!r}")
