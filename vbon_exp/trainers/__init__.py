"""Optimisation loops: on-policy RL (PPO, RLOO) and supervised fine-tuning (for BoN-SFT)."""

from vbon_exp.trainers.ppo import PPOTrainer
from vbon_exp.trainers.rl import ALGOS, OnPolicyTrainer, RLConfig, TrainConfig
from vbon_exp.trainers.rloo import RLOOTrainer

__all__ = ["ALGOS", "OnPolicyTrainer", "PPOTrainer", "RLConfig", "RLOOTrainer", "TrainConfig"]
