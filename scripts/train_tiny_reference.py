"""Train a small GPT-2 on the local IMDB reviews: the offline stand-in for lvwerra/gpt2-imdb (`model=imdb_tiny`).

    python scripts/train_tiny_reference.py [--data-dir ../shared/data/imdb] [--out outputs/tiny/imdb_reference]

Trains a byte-level BPE tokenizer and a GPT-2 (4 layers, width 256 by default) on CPU for --steps steps (the same
model on any machine: ~17 min on 2 cores), reports held-out perplexity on test reviews, and saves both with
save_pretrained (plus metrics.json)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vbon_exp import tiny  # noqa: E402
from vbon_exp.tasks.data import local_split_files, read_jsonl  # noqa: E402
from vbon_exp.tasks.imdb import clean_review  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "imdb"))
    p.add_argument("--out", default=str(ROOT / "outputs" / "tiny" / "imdb_reference"))
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=1000, help="AdamW steps (the cosine schedule spans them)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop after this many seconds (then the model depends on the machine's speed; default: none)")
    p.add_argument("--max-train-texts", type=int, default=None)
    p.add_argument("--held-out-texts", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.manual_seed(args.seed)
    files = local_split_files(args.data_dir)
    train = [clean_review(r["text"]) for r in read_jsonl(files["train"], ("text",))][: args.max_train_texts]
    test = [clean_review(r["text"]) for r in read_jsonl(files["test"], ("text",))][: args.held_out_texts]
    logging.info("training the tokenizer on %d reviews", len(train))
    tokenizer = tiny.train_tokenizer(train, args.vocab_size)
    model = tiny.make_gpt2(tokenizer, args.n_layer, args.n_embd, args.n_head, n_positions=max(128, args.seq_len),
                           seed=args.seed)
    train_blocks = tiny.lm_batches(tokenizer, train, args.seq_len)
    test_blocks = tiny.lm_batches(tokenizer, test, args.seq_len)
    logging.info("%d training blocks of %d tokens; %.1fM parameters", len(train_blocks), args.seq_len,
                 sum(p.numel() for p in model.parameters()) / 1e6)
    stats = tiny.train_lm(model, train_blocks, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, time_budget_s=args.time_budget)
    metrics = {**vars(args), **stats, "held_out_perplexity": tiny.perplexity(model, test_blocks),
               "held_out_tokens": int(test_blocks.numel()), "vocab_size": len(tokenizer),
               "parameters": sum(p.numel() for p in model.parameters())}
    out = tiny.save(model, tokenizer, args.out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"held-out perplexity {metrics['held_out_perplexity']:.2f} after {stats['steps']} steps "
          f"({stats['train_s']:.0f} s); saved to {out}")
    return metrics


if __name__ == "__main__":
    main()
