"""conf `reference:` (vbon_exp/reference.py) and what a cache holds in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vbon_exp.errors import check_number


@dataclass
class ReferenceConfig:
    """conf `reference:`: the reference reward cache that estimates each prompt's reward CDF F_x."""

    # Cached π_ref samples per prompt (M ≥ 2); F̂ = (rank + 1)/(M + 1).
    m: int = 512
    # M of the test prompts' cache (the evaluator's win rate), when it should not follow reference.m: an M ablation
    # varies the training F̂ only and keeps one evaluation yardstick. null = reference.m.
    test_m: Optional[int] = None
    # Prompts per cache chunk: one atomic file each; an interrupted build resumes at the first missing chunk.
    chunk_prompts: int = 64
    # Response texts kept per prompt in the cache for inspection (0 = none).
    keep_texts: int = 4
    # Directory of caches, keyed by a hash of everything that determines them (shared by all runs).
    cache_dir: str = "${paths.cache_dir}"

    def m_for(self, split: str) -> int:
        """M of one split's cache: test_m for the test split when set, else m."""
        return self.test_m if split == "test" and self.test_m is not None else self.m

    def check(self, prefix: str = "reference") -> None:
        check_number(f"{prefix}.m", self.m, integer=True, minimum=2)
        check_number(f"{prefix}.test_m", self.test_m, integer=True, minimum=2, allow_none=True)
        check_number(f"{prefix}.chunk_prompts", self.chunk_prompts, integer=True, minimum=1)
        check_number(f"{prefix}.keep_texts", self.keep_texts, integer=True, minimum=0)


def cache_memory_bytes(num_prompts: int, m: int, chunk_prompts: int, sequence_tokens: int) -> int:
    """What building and holding one cache takes in host memory, at least: the [P, M] float64 table and its float64
    rows (16 bytes per cached reward), plus one chunk's samples while it is built (chunk × M sequences of prompt +
    response ids and masks, int64)."""
    table = 16 * num_prompts * m
    chunk = min(chunk_prompts, num_prompts) * m * sequence_tokens * 2 * 8
    return table + chunk
