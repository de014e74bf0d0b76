"""Training loops: on-policy RL (PPO, RLOO, GRPO, Dr.GRPO), supervised fine-tuning (BoN-SFT), preference losses (DPO,
IPO, BoNBoN)."""

from vbon_exp.trainers.grpo import DrGRPOTrainer, GRPOTrainer
from vbon_exp.trainers.on_policy import ALGOS, OnPolicyTrainer, RLConfig
from vbon_exp.trainers.ppo import PPOTrainer
from vbon_exp.trainers.rloo import RLOOTrainer
from vbon_exp.trainers.shared import TrainConfig

__all__ = ["ALGOS", "DrGRPOTrainer", "GRPOTrainer", "OnPolicyTrainer", "PPOTrainer", "RLConfig", "RLOOTrainer",
           "TrainConfig"]
