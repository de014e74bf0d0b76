"""REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): k responses per prompt, each baselined by the
mean return of the other k − 1. The KL penalty is folded into the sequence return, R = reward − β·Σ_t KL_t; no value
head. The update reuses the clipped policy-gradient loss (ratio = 1 on the first epoch: plain REINFORCE).

An objective may hand RLOO a group transform (vbon_exp.trainers.on_policy.GroupTransform): each prompt's k rewards
-> k advantages, each already baselined by a value not depending on its own sample (BoN-aware RL's max@N′
estimator). Then only the KL penalty gets the leave-one-out baseline: the mean of the others' transformed values
would depend on the sample itself (each is a function of the whole group), and subtracting it would bias the
gradient."""

from __future__ import annotations

import torch

from vbon_exp.trainers.on_policy import GroupTransform, OnPolicyTrainer, register_algo
from vbon_exp.trainers.rollout import Rollout, masked_whiten


def leave_one_out(values: torch.Tensor, k: int) -> torch.Tensor:
    """[B] each value minus the mean of the other k − 1 of its group (rows come grouped by prompt, k per group)."""
    grouped = values.view(-1, k)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


def rloo_advantages(seq_reward: torch.Tensor, kl_return: torch.Tensor, k: int,
                    group_transform: GroupTransform | None = None) -> torch.Tensor:
    """[B] sequence advantages from the objective's rewards [B] and the KL part of the return, −β·Σ_t k_t [B]: the
    leave-one-out advantage of their sum, or, with a group transform, the transform's advantages of the rewards plus
    the leave-one-out advantage of the KL part (each term's baseline free of its own sample: no bias)."""
    if group_transform is None:
        return leave_one_out(seq_reward + kl_return, k)
    transformed = group_transform(seq_reward.view(-1, k)).reshape(-1).to(seq_reward.dtype)
    return transformed + leave_one_out(kl_return, k)


@register_algo("rloo")
class RLOOTrainer(OnPolicyTrainer):
    uses_value_head = False
    applies_group_transform = True

    def responses_per_prompt(self) -> int:
        if self.cfg.rloo_k < 2:
            raise ValueError(f"algo.rloo_k must be ≥ 2 (a leave-one-out baseline needs company), got {self.cfg.rloo_k}")
        return self.cfg.rloo_k

    def compute_advantages(self, ro: Rollout) -> None:
        kl_return = -self.kl_coef * self.reward_penalty(ro).sum(-1)
        advantages = rloo_advantages(ro.seq_reward, kl_return, self.k, self.group_transform).reshape(-1, 1) * ro.mask
        ro.advantages = masked_whiten(advantages, ro.mask) if self.cfg.whiten_advantages else advantages

    def rollout_stats(self, ro: Rollout) -> dict:
        stats = super().rollout_stats(ro)
        estimate = getattr(self.group_transform, "estimate", None)
        if estimate is not None:  # the objective's own reward, estimated from each group (BoN-aware: max@N′)
            stats["objective_reward"] = float(estimate(ro.seq_reward.view(-1, self.k)).mean())
        return stats
