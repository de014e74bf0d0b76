"""conf/model/<name>.yaml (vbon_exp/modeling.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from vbon_exp.errors import check_choice


@dataclass
class ModelConfig:
    """conf/model/<name>.yaml: the policy/reference model of a language-model task (imdb, tldr)."""

    # Hub id or local directory (save_pretrained layout). Required.
    name_or_path: str = MISSING
    # Run code shipped with the model repository (off unless you trust it).
    trust_remote_code: bool = False
    # Weights dtype: null (as saved) | float32 | bfloat16 | float16.
    dtype: Optional[str] = None
    # Load the frozen reference in 4-bit (bitsandbytes NF4; CUDA only). The trained policy is never quantised.
    load_in_4bit: bool = False
    # The command that makes a locally built model (named in the error when it is missing); null for hub models.
    made_by: Optional[str] = None

    def check(self, prefix: str = "model") -> None:
        check_choice(f"{prefix}.dtype", self.dtype, (None, "float32", "bfloat16", "float16"))
