"""What an on-policy update works on: the rollout batch (samples, old and reference log-probs, values, sequence
rewards, then advantages and returns), the trainable policy with its value head, and the masked statistics every
loss and advantage uses (padding after EOS never counts)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vbon_exp import kl
from vbon_exp.logprobs import LOGITS_CHUNK, TokenStats, response_token_stats
from vbon_exp.modeling import Samples


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


class PolicyWithValue(nn.Module):
    """The trainable LM and (for PPO) a scalar value head on its last hidden state; one module so that DDP wraps and
    synchronises both (and accelerate's autocast covers both). Every trainer's forward pass goes through it."""

    def __init__(self, lm: nn.Module, with_value: bool):
        super().__init__()
        self.lm = lm
        hidden = lm.config.hidden_size
        self.value_head = nn.Linear(hidden, 1) if with_value else None  # float32 whatever the LM's dtype
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(next(lm.parameters()).device)

    def forward(self, samples: Samples, temperature: float, *, chunk: int = LOGITS_CHUNK, entropy: bool = False,
                other: nn.Module | None = None, kl: bool = False) -> tuple[TokenStats, torch.Tensor | None]:
        """(the responses' TokenStats under the LM — log-probs, and where asked the entropy, `other`'s log-probs and
        the full KL to it — computed `chunk` positions at a time (vbon_exp/logprobs.py), values [B, Lr] or None)."""
        stats = response_token_stats(self.lm, samples, temperature, chunk=chunk, entropy=entropy, other=other,
                                      kl=kl, hidden=self.value_head is not None)
        if self.value_head is None:
            return stats, None
        return stats, self.value_head(stats.hidden.float()).squeeze(-1)


@dataclass
class Rollout:
    samples: Samples
    mask: torch.Tensor  # [B, Lr] float
    logp_old: torch.Tensor  # [B, Lr]
    logp_ref: torch.Tensor  # [B, Lr]
    values: torch.Tensor | None  # [B, Lr]
    seq_reward: torch.Tensor  # [B] the objective's sequence reward
    advantages: torch.Tensor | None = None  # [B, Lr]
    returns: torch.Tensor | None = None  # [B, Lr]

    @property
    def kl_tokens(self) -> torch.Tensor:
        """[B, Lr] the per-token KL estimate k1 = log π_old − log π_ref (vbon_exp.kl), zero on padding: the logged
        KL (its sum is an unbiased estimate of the responses' KL whatever the trainer's penalty)."""
        return kl.k1(self.logp_old, self.logp_ref) * self.mask

    def penalty_tokens(self, estimator: str) -> torch.Tensor:
        """[B, Lr] the per-token KL penalty folded into the return (algo.kl_in=reward) by `estimator` of
        vbon_exp.kl (algo.kl_estimator), zero on padding: PPO's token rewards and the group trainers' returns."""
        return kl.KL_ESTIMATORS[estimator](self.logp_old, self.logp_ref) * self.mask

    def minibatch(self, idx: torch.Tensor) -> "Rollout":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Rollout(self.samples.select(idx), self.mask[idx], self.logp_old[idx], self.logp_ref[idx],
                       pick(self.values), self.seq_reward[idx], pick(self.advantages), pick(self.returns))
