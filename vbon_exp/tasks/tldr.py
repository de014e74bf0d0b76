"""`task=tldr`: Reddit TL;DR summarisation (the paper's §6), prompts formatted
`SUBREDDIT: r/...\nTITLE: ...\nPOST: ...\nTL;DR:`.

Prompts come from `datasets.load_dataset(dataset)` (`prompt` column; CarperAI/openai_summarize_tldr by default) or,
offline, from JSON-lines files in `data_dir` with a `prompt` field: `train.jsonl` and `test.jsonl` when present,
else the one file there is split into disjoint test and train prompts. Prompts longer than `max_prompt_tokens` keep
their head and the `TL;DR:` cue (as the seed code does)."""

from __future__ import annotations

import random

from vbon_exp.tasks.base import Task
from vbon_exp.tasks.data import DataError, load_hub_split, local_split_files, read_jsonl
from vbon_exp.tasks.lm import check_context, lm_task, load_policy, load_reward
from vbon_exp.settings.task import TldrTaskConfig  # noqa: F401  (its settings; re-exported)

CUE = "\nTL;DR:"


def format_prompt(subreddit: str, title: str, post: str) -> str:
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}{CUE}"


def prompt_texts(dataset: str, data_dir: str | None, hub_splits: dict[str, str]) -> dict[str, list[str]]:
    if data_dir is None:
        return {split: load_hub_split(dataset, hub, "prompt") for split, hub in hub_splits.items()}
    files = local_split_files(data_dir)
    if "train" in files and "test" in files:
        return {s: [r["prompt"] for r in read_jsonl(files[s], ("prompt",))] for s in ("train", "test")}
    if len(files) != 1:
        raise DataError(f"task.data_dir {data_dir}: expected train.jsonl and test.jsonl, or a single *.jsonl file; "
                        f"found {sorted(files)}")
    (only,) = files.values()
    return {"all": [r["prompt"] for r in read_jsonl(only, ("prompt",))]}


def encode_prompt(text: str, tokenizer, max_tokens: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) <= max_tokens:
        return ids
    cue = tokenizer(CUE, add_special_tokens=False).input_ids
    head = tokenizer(text[: text.rfind(CUE)] if CUE in text else text, add_special_tokens=False).input_ids
    return head[: max_tokens - len(cue)] + cue


def build(cfg: TldrTaskConfig, *, device, model, reward, max_new_tokens: int, **_) -> Task:
    dataset, data_dir, name = cfg.dataset, cfg.data_dir, cfg.name
    train_split, test_split = cfg.train_split, cfg.test_split
    num_train_prompts, num_test_prompts = cfg.num_train_prompts, cfg.num_test_prompts
    max_prompt_tokens, prompt_seed = cfg.max_prompt_tokens, cfg.prompt_seed
    texts = prompt_texts(dataset, data_dir, {"train": train_split, "test": test_split})
    rng = random.Random(prompt_seed)
    if "all" in texts:  # one local file: disjoint test and train prompts
        pool = list(texts["all"])
        rng.shuffle(pool)
        test_texts, train_texts = pool[:num_test_prompts], pool[num_test_prompts:]
    else:
        test_texts = rng.sample(texts["test"], min(num_test_prompts, len(texts["test"])))
        train_texts = list(texts["train"])
        rng.shuffle(train_texts)
    train_texts = train_texts[:num_train_prompts] if num_train_prompts else train_texts
    if not train_texts or not test_texts:
        raise DataError(f"task=tldr has {len(train_texts)} train and {len(test_texts)} test prompts: both must be "
                        "non-empty (lower task.num_test_prompts, or give more data)")
    tokenizer, reference, pad_id = load_policy(model, device)
    check_context(reference, max_prompt_tokens, max_new_tokens, "task.max_prompt_tokens")
    train = [encode_prompt(t, tokenizer, max_prompt_tokens) for t in train_texts]
    test = [encode_prompt(t, tokenizer, max_prompt_tokens) for t in test_texts]
    reward_model = load_reward(reward, device, tokenizer)
    return lm_task(name, model, tokenizer, reference, pad_id, reward_model, train, test)
