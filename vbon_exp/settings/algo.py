"""conf/algo/<name>.yaml: the on-policy RL trainers (vbon_exp/trainers/on_policy.py, ppo.py, rloo.py, grpo.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vbon_exp.errors import ConfigError, check_choice, check_number

# the RL algorithms (vbon_exp.trainers.ALGOS registers each under this name)
ALGO_NAMES = ("ppo", "rloo", "grpo", "dr_grpo")
# where the KL to π_ref enters training, and the per-token estimators a trainer may use for it (vbon_exp/kl.py)
KL_PLACEMENTS = ("reward", "loss")
TRAIN_KL_ESTIMATORS = ("k1", "k2", "k3")


@dataclass
class RLConfig:
    """conf/algo/<name>.yaml. Defaults are the paper's (Amini et al. 2025, App. on hyperparameters); conf/algo/ppo.yaml
    takes them as they are, conf/algo/rloo.yaml changes what RLOO needs."""

    # Algorithm: ppo | rloo | grpo | dr_grpo (vbon_exp.trainers.ALGOS; results column).
    name: str = "ppo"
    # AdamW learning rate (> 0).
    lr: float = 3e-6
    # AdamW epsilon.
    adam_eps: float = 1e-5
    # AdamW (β1, β2): torch's default; the seed code's trlx config used [0.9, 0.95].
    adam_betas: tuple[float, float] = (0.9, 0.999)
    # AdamW weight decay.
    weight_decay: float = 0.0
    # Learning-rate schedule: linear (decay to 0 over training) | constant.
    schedule: str = "linear"
    # Episodes (responses) sampled per update, over all processes: TRL's batch_size, trlx's num_rollouts.
    batch_size: int = 32
    # Optimizer steps per PPO epoch: each batch is split into this many minibatches (TRL's num_mini_batches; trlx's
    # num_rollouts / batch_size). Optimizer steps per episode = ppo_epochs × num_minibatches / batch_size: 0.125
    # with the paper's defaults (4 × 1 / 32) and with the seed code's trlx settings (4 × 4 / 128).
    num_minibatches: int = 1
    # Sequences per forward/backward pass, per process (gradient accumulation within a minibatch, for memory; also
    # the chunk of the rollout's log-prob passes; trlx's chunk_size is the rollout's generation chunk). null = a
    # whole minibatch at once. It changes no optimizer step, only how each is computed.
    micro_batch_size: Optional[int] = None
    # PPO epochs over each batch.
    ppo_epochs: int = 4
    # Training length in episodes (updates = total_episodes / batch_size).
    total_episodes: int = 10_000
    # GAE discount γ (PPO).
    gamma: float = 1.0
    # GAE λ (PPO).
    lam: float = 0.95
    # Policy-ratio clip ε.
    clip: float = 0.2
    # Value clip (PPO).
    vf_clip: float = 0.2
    # Value-loss coefficient (PPO).
    vf_coef: float = 0.2
    # Gradient-norm clipping (null = off).
    max_grad_norm: Optional[float] = 1.0
    # Clip the objective's sequence reward to [−c, c] before the KL penalty is added (trlx's cliprange_reward; the
    # seed code used 10). null = off.
    reward_clip: Optional[float] = None
    # Normalise advantages over each batch's real tokens.
    whiten_advantages: bool = True
    # Train only the top k transformer blocks and the final norm (null = the whole model).
    trainable_layers: Optional[int] = None
    # Responses per prompt (RLOO's leave-one-out group; PPO samples one).
    rloo_k: int = 4
    # Responses per prompt of GRPO's and Dr.GRPO's group (≥ 2): advantages are relative to the group.
    group_size: int = 4
    # Value head learning rate = lr × this.
    value_head_lr_scale: float = 1.0
    # Where the KL to π_ref enters: reward (a per-token penalty −β·k folded into the return, as PPO in Ziegler et al.
    # 2019 and this project's KL-RL, vBoN, BOND) | loss (β·k added to the loss, differentiated: GRPO).
    kl_in: str = "reward"
    # The per-token estimator k of that KL (vbon_exp/kl.py): k1 (log π_θ − log π_ref) | k2 (½ of its square) | k3
    # ((ρ − 1) − log ρ, ρ = π_ref/π_θ; GRPO's).
    kl_estimator: str = "k1"
    # A KL target (nats per response) for the adaptive controller of Ziegler et al. 2019 (trlx, TRL's PPO): β is
    # multiplied by 1 + clip(KL/target − 1, ±0.2)·batch/kl_horizon after each update. null = a fixed β.
    target_kl: Optional[float] = None
    # The controller's horizon in episodes (trlx, TRL: 10000).
    kl_horizon: int = 10_000

    def check(self, prefix: str = "algo") -> None:
        check_choice(f"{prefix}.name", self.name, ALGO_NAMES)
        for key in ("batch_size", "num_minibatches", "ppo_epochs", "total_episodes"):
            check_number(f"{prefix}.{key}", getattr(self, key), integer=True, minimum=1)
        check_number(f"{prefix}.micro_batch_size", self.micro_batch_size, integer=True, minimum=1, allow_none=True)
        if self.batch_size % self.num_minibatches:
            raise ConfigError(f"{prefix}.batch_size={self.batch_size} must be divisible by "
                              f"{prefix}.num_minibatches={self.num_minibatches}")
        check_number(f"{prefix}.lr", self.lr, exclusive_min=0)
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(f"{prefix}.adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}")
        check_number(f"{prefix}.reward_clip", self.reward_clip, exclusive_min=0, allow_none=True)
        check_choice(f"{prefix}.schedule", self.schedule, ("linear", "constant"))
        check_number(f"{prefix}.clip", self.clip, exclusive_min=0)
        check_number(f"{prefix}.vf_clip", self.vf_clip, exclusive_min=0)
        check_number(f"{prefix}.vf_coef", self.vf_coef, minimum=0)
        check_number(f"{prefix}.gamma", self.gamma, minimum=0, maximum=1)
        check_number(f"{prefix}.lam", self.lam, minimum=0, maximum=1)
        check_number(f"{prefix}.trainable_layers", self.trainable_layers, integer=True, minimum=1, allow_none=True)
        group = {"rloo": "rloo_k", "grpo": "group_size", "dr_grpo": "group_size"}.get(self.name)
        if group is not None:  # the responses per prompt a group-baselined trainer samples
            check_number(f"{prefix}.{group}", getattr(self, group), integer=True, minimum=2)
            if self.batch_size % getattr(self, group):
                raise ConfigError(f"{prefix}.batch_size={self.batch_size} must be divisible by "
                                  f"{prefix}.{group}={getattr(self, group)}")
        check_choice(f"{prefix}.kl_in", self.kl_in, KL_PLACEMENTS)
        check_choice(f"{prefix}.kl_estimator", self.kl_estimator, TRAIN_KL_ESTIMATORS)
        check_number(f"{prefix}.target_kl", self.target_kl, exclusive_min=0, allow_none=True)
        check_number(f"{prefix}.kl_horizon", self.kl_horizon, integer=True, minimum=1)
