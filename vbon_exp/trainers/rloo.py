"""REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): k responses per prompt, each baselined by the
mean return of the other k − 1. The KL penalty is folded into the sequence return, R = reward − β·Σ_t KL_t; no value
head. The update reuses the clipped policy-gradient loss (ratio = 1 on the first epoch: plain REINFORCE)."""

from __future__ import annotations

from vbon_exp.trainers.on_policy import OnPolicyTrainer, register_algo
from vbon_exp.trainers.rollout import Rollout, masked_whiten


@register_algo("rloo")
class RLOOTrainer(OnPolicyTrainer):
    uses_value_head = False

    def responses_per_prompt(self) -> int:
        if self.cfg.rloo_k < 2:
            raise ValueError(f"algo.rloo_k must be ≥ 2 (a leave-one-out baseline needs company), got {self.cfg.rloo_k}")
        return self.cfg.rloo_k

    def compute_advantages(self, ro: Rollout) -> None:
        k = self.k
        returns = ro.seq_reward - self.kl_coef * self.reward_penalty(ro).sum(-1)
        grouped = returns.view(-1, k)  # rows come grouped by prompt
        baseline = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
        advantages = (grouped - baseline).reshape(-1, 1) * ro.mask
        ro.advantages = masked_whiten(advantages, ro.mask) if self.cfg.whiten_advantages else advantages
