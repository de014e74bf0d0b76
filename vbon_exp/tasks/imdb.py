"""`task=imdb`: positive-sentiment continuation of IMDB reviews (the paper's controlled-generation task, §5).

Prompts are the first k ∈ {min_prefix_tokens, …, max_prefix_tokens} tokens (policy tokenizer, seeded) of IMDB
reviews with the HTML line breaks removed: `num_train_prompts` from the train split, `num_test_prompts` from the
test split. Reviews come from `datasets.load_dataset(dataset)` or, offline, from `data_dir/{train,test}.jsonl` with
one `{"text": ..., "label": ...}` per line."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Optional

from vbon_exp.errors import check_number
from vbon_exp.tasks.base import Task
from vbon_exp.tasks.data import DataError, load_hub_split, local_split_files, read_jsonl
from vbon_exp.tasks.lm import check_context, lm_task, load_policy, load_reward

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_review(text: str) -> str:
    return " ".join(_BR.sub(" ", text).split())


def review_texts(split: str, dataset: str, data_dir: str | None) -> list[str]:
    if data_dir is None:
        return load_hub_split(dataset, split, "text")
    files = local_split_files(data_dir)
    if split not in files:
        raise DataError(f"task.data_dir {data_dir} has no {split}.jsonl (found {sorted(files)})")
    return [row["text"] for row in read_jsonl(files[split], ("text",))]


def prefix_prompts(texts: list[str], tokenizer, n: int, min_tokens: int, max_tokens: int, seed: int,
                   what: str) -> list[list[int]]:
    """n prompts: for reviews in a seeded random order, the first k tokens with k uniform in [min, max]."""
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    prompts = []
    for i in order:
        k = rng.randint(min_tokens, max_tokens)
        # a few hundred characters hold the first max_tokens tokens; tokenizing whole reviews would be wasted work
        ids = tokenizer(clean_review(texts[i])[: 40 * max_tokens], add_special_tokens=False).input_ids
        if len(ids) >= k:
            prompts.append(ids[:k])
        if len(prompts) == n:
            return prompts
    raise DataError(f"only {len(prompts)} of the {n} {what} prompts could be made from {len(texts)} reviews")


@dataclass
class ImdbTaskConfig:
    """conf/task/imdb.yaml: positive-sentiment continuation of IMDB reviews (paper §5), GPT-2-IMDB policy,
    DistilBERT-IMDB reward (the model and reward groups)."""

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


def build(cfg: ImdbTaskConfig, *, device, model, reward, max_new_tokens: int, **_) -> Task:
    dataset, data_dir, name = cfg.dataset, cfg.data_dir, cfg.name
    num_train_prompts, num_test_prompts, prompt_seed = cfg.num_train_prompts, cfg.num_test_prompts, cfg.prompt_seed
    min_prefix_tokens, max_prefix_tokens = cfg.min_prefix_tokens, cfg.max_prefix_tokens
    train_texts = review_texts("train", dataset, data_dir)  # data problems surface before any model loads
    test_texts = review_texts("test", dataset, data_dir)
    tokenizer, reference, pad_id = load_policy(model, device)
    check_context(reference, max_prefix_tokens, max_new_tokens, "task.max_prefix_tokens")
    train = prefix_prompts(train_texts, tokenizer, num_train_prompts, min_prefix_tokens, max_prefix_tokens,
                           prompt_seed, "train")
    test = prefix_prompts(test_texts, tokenizer, num_test_prompts, min_prefix_tokens, max_prefix_tokens,
                          prompt_seed + 1, "test")
    reward_model = load_reward(reward, device, tokenizer)
    return lm_task(name, model, tokenizer, reference, pad_id, reward_model, train, test)
