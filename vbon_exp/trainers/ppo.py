"""PPO (Schulman et al. 2017) for causal LMs, as the paper trains both vBoN and KL-regularised RL.

The per-token reward is −β·(log π_θ(y_t) − log π_ref(y_t)) (algo.kl_estimator k1 and algo.kl_in=reward, the
defaults; none with the KL in the loss), and the objective's scalar sequence reward is added at
the last real response token (the EOS when one was generated), never on padding (as trlx does). Advantages are
GAE(γ, λ) over response tokens with a learned value head."""

from __future__ import annotations

import torch

from vbon_exp.trainers.on_policy import OnPolicyTrainer, register_algo
from vbon_exp.trainers.rollout import Rollout, masked_whiten


def token_rewards(ro: Rollout, kl_coef: float, penalty: torch.Tensor | None = None) -> torch.Tensor:
    """[B, Lr]: −β·KL_t on every real token (`penalty`, k1 by default), plus the sequence reward on the last real
    one."""
    rewards = -kl_coef * (ro.kl_tokens if penalty is None else penalty)
    last = (ro.mask.sum(-1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(last), device=last.device), last] += ro.seq_reward
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over right-padded sequences: the state after the last real token is
    terminal (value 0). Returns (advantages, returns), zero on padding."""
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m
        advantages[:, t] = running
        next_value = values[:, t] * m
    return advantages, (advantages + values) * mask


@register_algo("ppo")
class PPOTrainer(OnPolicyTrainer):
    uses_value_head = True

    def compute_advantages(self, ro: Rollout) -> None:
        rewards = token_rewards(ro, self.kl_coef, self.reward_penalty(ro))
        advantages, returns = gae(rewards, ro.values, ro.mask, self.cfg.gamma, self.cfg.lam)
        ro.advantages = masked_whiten(advantages, ro.mask) if self.cfg.whiten_advantages else advantages
        ro.returns = returns
