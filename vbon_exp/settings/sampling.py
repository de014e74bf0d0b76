"""conf `sampling:` and the `sampler` group (vbon_exp/sampling.py, vbon_exp/vllm_backend.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from vbon_exp.errors import check_choice, check_number

# the sampler backends (vbon_exp.sampling.SAMPLERS registers each under this name)
SAMPLER_NAMES = ("native", "vllm")


@dataclass
class SamplingConfig:
    """conf `sampling:` (what π_ref and every policy sample with) plus the backend chosen by the `sampler` group."""

    # Softmax temperature (> 0). π_ref is the model sampled at this temperature.
    temperature: float = 1.0
    # Keep only the k most likely tokens (integer ≥ 0; 0 = no top-k filter).
    top_k: int = 0
    # Nucleus sampling mass (0 < top_p ≤ 1; 1 = no filter).
    top_p: float = 1.0
    # Maximum response length in tokens (≥ 1).
    max_new_tokens: int = 48
    # Sequences decoded together in one batch (≥ 1).
    batch_size: int = 256
    # Sampler backend: native (this module) | vllm (vbon_exp/vllm_backend.py; GPU, optional package). Set by the
    # `sampler` config group (sampler=vllm), which also fills backend_options.
    backend: str = "native"
    # Extra settings of the backend (vllm: gpu_memory_utilization, enforce_eager, any vllm.LLM keyword).
    backend_options: Optional[dict] = field(default=None, compare=False, hash=False)

    def check(self, prefix: str = "sampling") -> None:
        check_number(f"{prefix}.temperature", self.temperature, exclusive_min=0)
        check_number(f"{prefix}.top_k", self.top_k, integer=True, minimum=0)
        check_number(f"{prefix}.top_p", self.top_p, exclusive_min=0, maximum=1)
        check_number(f"{prefix}.max_new_tokens", self.max_new_tokens, integer=True, minimum=1)
        check_number(f"{prefix}.batch_size", self.batch_size, integer=True, minimum=1)
        check_choice(f"{prefix}.backend", self.backend, SAMPLER_NAMES)
