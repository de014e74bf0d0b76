"""Tiny models and data files the tests build themselves (no hub, no download), saved with save_pretrained so
the pipeline loads them through the same from_pretrained code paths as hub ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vbon_exp import tiny

SHARED_IMDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb"
SHARED_TLDR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tldr"

REVIEWS = [
    ("This movie was wonderful, the acting was great and I loved the story.", 1),
    ("A terrible film. Boring plot, bad acting, I hated every minute of it.", 0),
    ("One of the best films I have seen this year.<br /><br />Highly recommended!", 1),
    ("I wanted to like it but the script is awful and the ending makes no sense.", 0),
    ("Great cast, beautiful music and a moving story about a family.", 1),
    ("Worst movie ever made. Avoid at all costs, a total waste of time.", 0),
    ("An excellent, funny and clever comedy with a wonderful lead actor.", 1),
    ("Dull, slow and predictable; the characters are flat and uninteresting.", 0),
]

POSTS = [
    ("relationships", "My friend forgot my birthday", "We have been friends for ten years and she forgot."),
    ("AskReddit", "What is the best advice you got?", "I am starting a new job next week and I am nervous."),
    ("tifu", "TIFU by locking myself out", "I went to get the mail and the door closed behind me."),
    ("jobs", "Should I take the offer?", "The new company pays more but the commute is two hours."),
    ("loseit", "Lost 10 pounds", "After three months of walking every day I finally see results."),
    ("legaladvice", "Landlord kept my deposit", "I left the apartment clean but he says there is damage."),
]


def write_imdb_dir(directory: Path, copies: int = 4) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with (directory / f"{split}.jsonl").open("w") as f:
            for _ in range(copies):
                for text, label in REVIEWS:
                    f.write(json.dumps({"text": text, "label": label}) + "\n")
    return directory


def write_tldr_file(directory: Path, copies: int = 4) -> Path:
    from vbon_exp.tasks.tldr import format_prompt

    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "test500.jsonl").open("w") as f:
        for c in range(copies):
            for sub, title, post in POSTS:
                f.write(json.dumps({"prompt": format_prompt(sub, f"{title} ({c})", post)}) + "\n")
    return directory


def corpus() -> list[str]:
    from vbon_exp.tasks.tldr import format_prompt

    return [t for t, _ in REVIEWS] * 3 + [format_prompt(*p) for p in POSTS] * 3


def build_policy(directory: Path, seed: int = 0) -> Path:
    tokenizer = tiny.train_tokenizer(corpus(), vocab_size=300)
    model = tiny.make_gpt2(tokenizer, n_layer=1, n_embd=32, n_head=2, n_positions=256, seed=seed)
    return tiny.save(model, tokenizer, directory)


def build_classifier(directory: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """num_labels=2: a sentiment classifier (NEGATIVE/POSITIVE); 1: a one-logit reward head (TL;DR RM)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = tiny.train_tokenizer(corpus(), vocab_size=300)
    if num_labels == 2:
        model = tiny.make_classifier(tokenizer, n_layer=1, n_embd=32, n_head=2, n_positions=512, seed=seed)
    else:
        import torch

        torch.manual_seed(seed)
        model = GPT2ForSequenceClassification(GPT2Config(
            vocab_size=len(tokenizer), n_positions=1024, n_embd=32, n_layer=1, n_head=2, num_labels=1,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id))
    return tiny.save(model, tokenizer, directory)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Tiny policy, sentiment classifier, one-logit RM, and IMDB / TL;DR data files, built once per session."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "policy": build_policy(root / "policy"),
        "classifier": build_classifier(root / "classifier"),
        "rm": build_classifier(root / "rm", num_labels=1),
        "imdb": write_imdb_dir(root / "imdb"),
        "tldr": write_tldr_file(root / "tldr"),
    }
