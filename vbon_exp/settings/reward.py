"""conf/reward/<name>.yaml, by `type` (vbon_exp/rewards.py); the judges of `eval.judges` are reward configs too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from vbon_exp.errors import ConfigError, check_choice, check_number

# what of a classifier is the reward (vbon_exp.rewards.CLASSIFIER_OUTPUTS implements each)
CLASSIFIER_OUTPUT_NAMES = ("prob", "logit", "margin")


@dataclass
class ClassifierRewardConfig:
    """conf/reward/<name>.yaml with `type: classifier`: a sequence classifier (or one-logit reward head)."""

    # Reward kind (vbon_exp.rewards.REWARDS): classifier | vader.
    type: str = "classifier"
    # Hub id or local directory. Required.
    name_or_path: str = MISSING
    # The class whose logit is the reward, by name in the model config's id2label (never by index); null: a
    # one-logit reward head.
    label: Optional[str] = None
    # What of the classifier is the reward: prob (p of the class `label`: the paper's r(y) = p(POS|y)) | logit (its
    # logit, as the seed code trained) | margin (its logit minus the largest other class's: the log-odds for two).
    output: str = "logit"
    # Score prompt + response (true) or the response alone.
    with_prompt: bool = True
    # Classifier input length cap (tokens).
    max_length: int = 512
    # Pairs per classifier forward pass.
    batch_size: int = 64
    # Score of a response that ends without EOS (the seed code's TL;DR used -20); null = no penalty.
    eos_penalty: Optional[float] = None
    # Run code shipped with the model repository (off unless you trust it).
    trust_remote_code: bool = False
    # Weights dtype for GPU users: null (as saved) | float32 | bfloat16 | float16.
    dtype: Optional[str] = None
    # The command that makes a locally built model (named in the error when it is missing); null for hub models.
    made_by: Optional[str] = None

    def check(self, prefix: str = "reward") -> None:
        check_choice(f"{prefix}.output", self.output, CLASSIFIER_OUTPUT_NAMES)
        if self.label is None and self.output != "logit":
            raise ConfigError(f"{prefix}.output={self.output} needs {prefix}.label (the class); a one-logit reward "
                              f"head has only {prefix}.output=logit")
        check_number(f"{prefix}.max_length", self.max_length, integer=True, minimum=1)
        check_number(f"{prefix}.batch_size", self.batch_size, integer=True, minimum=1)
        check_choice(f"{prefix}.dtype", self.dtype, (None, "float32", "bfloat16", "float16"))


@dataclass
class VaderRewardConfig:
    """conf/reward/vader.yaml: VADER's compound sentiment score in [−1, 1] (offline; the lexicon ships with it)."""

    # Reward kind (vbon_exp.rewards.REWARDS): classifier | vader.
    type: str = "vader"
    # Score prompt + response (true) or the response alone.
    with_prompt: bool = True

    def check(self, prefix: str = "reward") -> None:
        pass


# reward.type -> its settings (vbon_exp.rewards.REWARDS builds each)
REWARD_SETTINGS = {"classifier": ClassifierRewardConfig, "vader": VaderRewardConfig}
