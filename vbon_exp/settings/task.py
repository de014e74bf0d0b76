"""conf/task/<name>.yaml (vbon_exp/tasks/*.py); `uses_model_groups`: the task reads the model and reward groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from vbon_exp.errors import ConfigError, check_number


@dataclass
class SyntheticTaskConfig:
    """conf/task/synthetic.yaml: an exactly solvable task. A tiny random GPT-2 over `vocab_size` symbols writes
    responses of exactly `response_length` tokens, so all vocab_size^response_length responses are enumerated and
    every quantity (π_ref, F, π_BoN, π*, KLs) is known exactly. Artifacts are built once under paths.cache_dir/models."""

    # reads the `model` and `reward` config groups (language-model tasks)
    uses_model_groups: ClassVar[bool] = False

    # Task name (results column; vbon_exp.tasks.TASKS).
    name: str = "synthetic"
    # Symbols in the vocabulary (responses use all of them).
    vocab_size: int = 6
    # Tokens per response (fixed; the model has no EOS).
    response_length: int = 5
    # Tokens per prompt.
    prompt_length: int = 2
    # Distinct prompts; the same prompts are used for training and testing.
    num_prompts: int = 4
    # Reference model size: GPT-2 layers.
    n_layer: int = 2
    # Reference model width.
    n_embd: int = 32
    # Reference model attention heads.
    n_head: int = 2
    # Std of the random weights: larger makes π_ref peakier (0.1: entropy 8.4 nats of log(7776) = 9.0).
    init_std: float = 0.1
    # Seed of the reference weights.
    model_seed: int = 0
    # Seed of the reward table.
    reward_seed: int = 0
    # Reward levels: 0 = the continuous table reward (distinct values); L ≥ 2 rounds it to the nearest of L equally
    # spaced values in [−2, 2] (clamped), so many responses tie (discrete rewards: BoN's tie-aware KL).
    reward_levels: int = 0
    # The size s ≥ 0 of the proxy's error: beside the proxy r (the reward every method optimises, every estimate
    # reads) the oracle knows a gold reward gold = r + s·(P − max(r, 0)²/2), P a random table reward of r's form
    # (std ≈ 1, from gold_seed), the square an over-reward of high proxy values: gold falls past r = 1/s. 0: gold = r.
    # Only the exact oracle reads it (results columns exact_gold_reward, exact_gold_win_rate; hedgetune.csv).
    gold: float = 0.5
    # Seed of the gold perturbation P's table (≠ reward_seed: P must not be r's own table).
    gold_seed: int = 1
    # Default sampling temperature (sampling.* follows these unless overridden).
    temperature: float = 1.0
    # Default top-k (0 = off; the synthetic task's exact values need 0).
    top_k: int = 0
    # Default top-p (1 = off; the synthetic task's exact values need 1).
    top_p: float = 1.0
    # Default response length cap: the fixed response length.
    max_new_tokens: int = "${.response_length}"  # type: ignore[assignment]  (an interpolation, resolved to int)

    def check(self, prefix: str = "task") -> None:
        for key in ("vocab_size", "response_length", "prompt_length", "num_prompts", "n_layer", "n_embd", "n_head"):
            check_number(f"{prefix}.{key}", getattr(self, key), integer=True, minimum=1)
        check_number(f"{prefix}.init_std", self.init_std, exclusive_min=0)
        check_number(f"{prefix}.reward_levels", self.reward_levels, integer=True, minimum=0)
        check_number(f"{prefix}.gold", self.gold, minimum=0)
        check_number(f"{prefix}.gold_seed", self.gold_seed, integer=True)
        if self.gold > 0 and self.gold_seed == self.reward_seed:
            raise ConfigError(f"{prefix}.gold_seed={self.gold_seed} equals {prefix}.reward_seed: the gold perturbation "
                              "P would be the proxy's own table; choose another gold_seed")
        if self.reward_levels == 1:
            raise ConfigError(f"{prefix}.reward_levels must be 0 (continuous) or ≥ 2, got 1")
        if self.vocab_size ** self.response_length > 10**7:
            raise ConfigError(f"{prefix}.vocab_size={self.vocab_size} ** {prefix}.response_length="
                              f"{self.response_length} responses are too many to enumerate exactly (limit 1e7)")

    def check_run(self, settings) -> None:
        """Rules that tie the task to the rest of the run (`settings`: the RunSettings)."""
        # the oracle enumerates the temperature-scaled model; a top-k/top-p sampler draws from another distribution
        for key, neutral in (("top_k", 0), ("top_p", 1.0)):
            value = getattr(settings.sampling, key)
            if value != neutral:
                raise ConfigError(f"sampling.{key}={value} is not supported on the synthetic task (its exact values "
                                  f"describe the unfiltered sampler); use sampling.{key}={neutral}")
        if settings.sampling.max_new_tokens != self.response_length:
            raise ConfigError(f"sampling.max_new_tokens must equal task.response_length={self.response_length} on "
                              "the synthetic task (responses have a fixed length and no EOS)")

    def sizes(self) -> dict:
        """What the memory pre-flight needs before anything is built."""
        return {"num_train_prompts": self.num_prompts, "num_test_prompts": self.num_prompts,
                "prompt_tokens": self.prompt_length, "vocab_size": self.vocab_size}


@dataclass
class ImdbTaskConfig:
    """conf/task/imdb.yaml: positive-sentiment continuation of IMDB reviews (paper §5), GPT-2-IMDB policy,
    DistilBERT-IMDB reward (the model and reward groups)."""

    # reads the `model` and `reward` config groups (language-model tasks)
    uses_model_groups: ClassVar[bool] = True

    # Task name (results column; vbon_exp.tasks.TASKS).
    name: str = "imdb"
    # Dataset hub id (used when data_dir is null).
    dataset: str = "stanfordnlp/imdb"
    # Local directory with train.jsonl and test.jsonl ({"text", "label"} per line), e.g. ../shared/data/imdb.
    data_dir: Optional[str] = None
    # Prompts from the train reviews (the paper: 5000).
    num_train_prompts: int = 5000
    # Prompts from the test reviews (the paper: 512).
    num_test_prompts: int = 512
    # Prompt = the first k tokens of a review, k uniform in [min_prefix_tokens, max_prefix_tokens].
    min_prefix_tokens: int = 2
    # Longest prompt prefix (tokens).
    max_prefix_tokens: int = 8
    # Seed of the prompt choice.
    prompt_seed: int = 0
    # Default sampling temperature (the paper's 0.7).
    temperature: float = 0.7
    # Default top-k (0 = off).
    top_k: int = 0
    # Default top-p (1 = off).
    top_p: float = 1.0
    # Default response length cap (tokens).
    max_new_tokens: int = 48

    def check(self, prefix: str = "task") -> None:
        check_number(f"{prefix}.num_train_prompts", self.num_train_prompts, integer=True, minimum=1)
        check_number(f"{prefix}.num_test_prompts", self.num_test_prompts, integer=True, minimum=1)
        check_number(f"{prefix}.min_prefix_tokens", self.min_prefix_tokens, integer=True, minimum=1)
        check_number(f"{prefix}.max_prefix_tokens", self.max_prefix_tokens, integer=True,
                     minimum=self.min_prefix_tokens)

    def sizes(self) -> dict:
        return {"num_train_prompts": self.num_train_prompts, "num_test_prompts": self.num_test_prompts,
                "prompt_tokens": self.max_prefix_tokens, "vocab_size": None}


@dataclass
class TldrTaskConfig:
    """conf/task/tldr.yaml: Reddit TL;DR summarisation (paper §6), Pythia-2.8B SFT policy and its reward model."""

    # reads the `model` and `reward` config groups (language-model tasks)
    uses_model_groups: ClassVar[bool] = True

    # Task name (results column; vbon_exp.tasks.TASKS).
    name: str = "tldr"
    # Dataset hub id (used when data_dir is null).
    dataset: str = "CarperAI/openai_summarize_tldr"
    # Hub split of the train prompts.
    train_split: str = "train"
    # Hub split of the test prompts.
    test_split: str = "test"
    # Local directory of JSON-lines files with a "prompt" field, e.g. ../shared/data/tldr.
    data_dir: Optional[str] = None
    # Train prompts (null = all).
    num_train_prompts: Optional[int] = None
    # Test prompts.
    num_test_prompts: int = 256
    # Longer prompts keep their head and the "TL;DR:" cue (tokens).
    max_prompt_tokens: int = 512
    # Seed of the prompt choice.
    prompt_seed: int = 0
    # Default sampling temperature (the paper's 0.7); evaluate across temperatures with eval settings.
    temperature: float = 0.7
    # Default top-k (0 = off).
    top_k: int = 0
    # Default top-p (1 = off).
    top_p: float = 1.0
    # Default response length cap (tokens).
    max_new_tokens: int = 50

    def check(self, prefix: str = "task") -> None:
        check_number(f"{prefix}.num_train_prompts", self.num_train_prompts, integer=True, minimum=1,
                     allow_none=True)
        check_number(f"{prefix}.num_test_prompts", self.num_test_prompts, integer=True, minimum=1)
        check_number(f"{prefix}.max_prompt_tokens", self.max_prompt_tokens, integer=True, minimum=8)

    def sizes(self) -> dict:
        return {"num_train_prompts": self.num_train_prompts or 0, "num_test_prompts": self.num_test_prompts,
                "prompt_tokens": self.max_prompt_tokens, "vocab_size": None}


def synthetic_architecture(spec) -> dict:
    """The synthetic π_ref's GPT-2 config.json (as a dict), from a SyntheticSpec or the task's settings (the same
    fields): what vbon_exp/tasks/synthetic.py builds and what `plan=true` counts."""
    return {"model_type": "gpt2", "vocab_size": spec.vocab_size,
            "n_positions": spec.prompt_length + spec.response_length, "n_embd": spec.n_embd, "n_layer": spec.n_layer,
            "n_head": spec.n_head, "initializer_range": spec.init_std, "bos_token_id": None, "eos_token_id": None,
            "pad_token_id": None, "tie_word_embeddings": False}


# task.name -> its settings (vbon_exp.tasks.TASKS builds each)
TASK_SETTINGS = {"synthetic": SyntheticTaskConfig, "imdb": ImdbTaskConfig, "tldr": TldrTaskConfig}
