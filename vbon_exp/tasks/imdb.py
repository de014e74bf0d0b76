"""`task=imdb`: positive-sentiment continuation of IMDB reviews (the paper's controlled-generation task, §5).

Prompts are the first k ∈ {min_prefix_tokens, …, max_prefix_tokens} tokens (policy tokenizer, seeded) of IMDB
reviews with the HTML line breaks removed: `num_train_prompts` from the train split, `num_test_prompts` from the
test split. Reviews come from `datasets.load_dataset(dataset)` or, offline, from `data_dir/{train,test}.jsonl` with
one `{"text": ..., "label": ...}` per line."""

from __future__ import annotations

import random
import re

from vbon_exp.tasks.base import Task
from vbon_exp.tasks.data import DataError, load_hub_split, local_split_files, read_jsonl
from vbon_exp.tasks.lm import check_context, lm_task, load_policy, load_reward
from vbon_exp.settings.task import ImdbTaskConfig  # noqa: F401  (its settings; re-exported)

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
