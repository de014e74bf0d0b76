"""GRPO (Shao et al. 2024, DeepSeekMath §4.1) and Dr.GRPO (Liu et al. 2025, "Understanding R1-Zero-like training").

Both sample a group of G = `algo.group_size` responses per prompt and need no value head. A response's advantage is
its return relative to its group's — GRPO: (R − mean)/std (the sample std, + 1e-4 as TRL); Dr.GRPO: R − mean — the
same on every token. The clipped per-token loss is averaged over each response's length, then over responses (GRPO),
or summed over all tokens and divided by a constant, responses × `sampling.max_new_tokens` (Dr.GRPO: no length
bias). The KL to π_ref follows `algo.kl_in` / `algo.kl_estimator` (conf/algo/grpo.yaml: k3 in the loss, GRPO's
published default; in the loss it is aggregated as the policy-gradient term is). R is the objective's sequence
reward, minus β·Σ_t k_t when the KL is in the reward."""

from __future__ import annotations

import torch

from vbon_exp.trainers.on_policy import OnPolicyTrainer, register_algo
from vbon_exp.trainers.rollout import Rollout

STD_EPS = 1e-4  # TRL's GRPOTrainer: advantages / (std + 1e-4)


def group_advantages(returns: torch.Tensor, group: int, scale: bool) -> torch.Tensor:
    """[B] the returns relative to their group's mean (rows come grouped by prompt), divided by the group's sample
    standard deviation (+ STD_EPS) when `scale`."""
    grouped = returns.view(-1, group)
    centred = grouped - grouped.mean(-1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(-1, keepdim=True) + STD_EPS)
    return centred.reshape(-1)


@register_algo("grpo")
class GRPOTrainer(OnPolicyTrainer):
    uses_value_head = False
    scale_by_std = True

    def responses_per_prompt(self) -> int:
        if self.cfg.group_size < 2:
            raise ValueError(f"algo.group_size must be ≥ 2 (a group needs company), got {self.cfg.group_size}")
        return self.cfg.group_size

    def compute_advantages(self, ro: Rollout) -> None:
        returns = ro.seq_reward - self.kl_coef * self.reward_penalty(ro).sum(-1)
        advantages = group_advantages(returns, self.k, self.scale_by_std)
        ro.advantages = advantages.unsqueeze(-1) * ro.mask

    def aggregate(self, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each response's mean over its own tokens, then the mean over responses."""
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


@register_algo("dr_grpo")
class DrGRPOTrainer(GRPOTrainer):
    scale_by_std = False

    def aggregate(self, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The sum over every real token, divided by responses × the longest response allowed (a constant)."""
        return (per_token * mask).sum() / (per_token.shape[0] * self.sampling.max_new_tokens)
