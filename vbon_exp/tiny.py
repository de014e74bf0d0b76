"""Small stand-in models built and trained locally, for machines without a model hub.

A byte-level BPE tokenizer (`tokenizers`), a small GPT-2 language model and a small sequence classifier, all saved with
`save_pretrained` so the pipeline loads them through `from_pretrained` exactly like hub models. Used by
scripts/train_tiny_reference.py, scripts/train_tiny_reward.py and the tests."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from vbon_exp.progress import progress

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: list[str], vocab_size: int):
    """A GPT-2-style byte-level BPE tokenizer with EOS and a separate pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=PAD)


def make_gpt2(tokenizer, n_layer: int, n_embd: int, n_head: int, n_positions: int = 128, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


def make_classifier(tokenizer, n_layer: int, n_embd: int, n_head: int, n_positions: int = 256, seed: int = 0):
    """A small GPT-2 sequence classifier with labels NEGATIVE (0) and POSITIVE (1), like lvwerra/distilbert-imdb."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1}, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2ForSequenceClassification(config)


def warmup_cosine(optimizer, steps: int, warmup_frac: float = 0.05):
    """Linear warm-up over the first 5% of steps, then cosine decay to 0."""
    warmup = max(1, int(warmup_frac * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lm_batches(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Concatenate EOS-separated texts into one token stream cut into [n, seq_len] blocks."""
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


@torch.no_grad()
def perplexity(model, blocks: torch.Tensor, batch_size: int = 32) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        b = blocks[start : start + batch_size]
        total += float(model(b, labels=b).loss) * b.numel()
        count += b.numel()
    return math.exp(total / max(count, 1))


def _train(model, batch_loss, *, steps: int, lr: float, seed: int, time_budget_s: float | None, desc: str) -> dict:
    """AdamW with warm-up + cosine decay; `batch_loss(generator)` draws a random batch and returns its loss. Stops
    early at the time budget."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = warmup_cosine(opt, steps)
    model.train()
    t0 = time.perf_counter()
    bar = progress(range(steps), desc=desc, unit="step")
    step = 0
    for step in bar:
        loss = batch_loss(g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
        if time_budget_s and time.perf_counter() - t0 > time_budget_s:
            log.info("time budget reached after %d steps", step + 1)
            break
    model.eval()
    return {"steps": step + 1, "train_s": time.perf_counter() - t0}


def train_lm(model, train_blocks: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int = 0,
             time_budget_s: float | None = None) -> dict:
    """Next-token cross-entropy on random blocks of the token stream."""

    def batch_loss(g):
        idx = torch.randint(len(train_blocks), (batch_size,), generator=g)
        return model(train_blocks[idx], labels=train_blocks[idx]).loss

    return _train(model, batch_loss, steps=steps, lr=lr, seed=seed, time_budget_s=time_budget_s, desc="training LM")


def train_classifier(model, tokenizer, texts: list[str], labels: list[int], *, steps: int, batch_size: int,
                     lr: float, max_length: int, seed: int = 0, time_budget_s: float | None = None) -> dict:
    """Cross-entropy on random batches of labelled texts."""
    y_all = torch.tensor(labels)

    def batch_loss(g):
        idx = torch.randint(len(texts), (batch_size,), generator=g)
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        return model(**enc, labels=y_all[idx]).loss

    return _train(model, batch_loss, steps=steps, lr=lr, seed=seed, time_budget_s=time_budget_s,
                  desc="training classifier")


@torch.no_grad()
def accuracy(model, tokenizer, texts: list[str], labels: list[int], max_length: int, batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += int((pred == torch.tensor(labels[start : start + batch_size])).sum())
    return correct / max(len(texts), 1)


def save(model, tokenizer, directory: str | Path) -> Path:
    """save_pretrained into a temp dir, then rename: a crash never leaves a half-written model."""
    import os
    import shutil
    import tempfile

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".tmp-{directory.name}-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if directory.exists():
        shutil.rmtree(directory)
    os.rename(tmp, directory)
    return directory
