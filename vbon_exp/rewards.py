"""Reward models: anything that maps scored (prompt, response) pairs to one float per pair.

A reward is a callable `reward(samples) -> FloatTensor[B]` with a `name` (for messages) and a `fingerprint`
(for cache keys). `score` batches it and refuses non-finite values before anything downstream uses them."""

from __future__ import annotations

from typing import Protocol

import torch

from vbon_exp.modeling import Samples


class RewardError(RuntimeError):
    """A reward model returned NaN or inf; the message names the model and the batch."""


class Reward(Protocol):
    name: str
    fingerprint: str

    def __call__(self, samples: Samples) -> torch.Tensor: ...


@torch.inference_mode()
def score(reward: Reward, samples: Samples, batch_size: int = 256, what: str = "batch") -> torch.Tensor:
    """Rewards for every pair, float32 on CPU; raises RewardError naming the reward and the batch on NaN/inf."""
    out = []
    for start in range(0, len(samples), batch_size):
        part = samples.select(slice(start, start + batch_size))
        r = reward(part).detach().float().cpu()
        bad = ~torch.isfinite(r)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0]) + start
            raise RewardError(
                f"reward model {reward.name!r} returned {r[bad][0].item()} for {int(bad.sum())} of {len(part)} "
                f"pairs in {what} rows {start}..{start + len(part) - 1} (first bad row {first}); stopping before "
                "anything is written"
            )
        out.append(r)
    return torch.cat(out) if out else torch.zeros(0)


def score_samples(reward: Reward, samples: Samples, batch_size: int = 256, what: str = "batch") -> Samples:
    """Fill `samples.rewards` once (no-op when already scored)."""
    if samples.rewards is None:
        samples.rewards = score(reward, samples, batch_size, what)
    return samples
