"""Train a small sentiment classifier on the local IMDB labels: the offline stand-in for lvwerra/distilbert-imdb
(`reward=imdb_tiny`; its POSITIVE logit is the reward).

    python scripts/train_tiny_reward.py [--data-dir ../shared/data/imdb] [--out outputs/tiny/imdb_reward]

Trains for --steps steps (the same model on any machine: ~10 min on 2 cores), reports accuracy on held-out test reviews
and saves the model with save_pretrained (plus metrics.json)."""

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
    p.add_argument("--out", default=str(ROOT / "outputs" / "tiny" / "imdb_reward"))
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500, help="AdamW steps (the cosine schedule spans them)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop after this many seconds (then the model depends on the machine's speed; default: none)")
    p.add_argument("--max-train-texts", type=int, default=None)
    p.add_argument("--held-out-texts", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    files = local_split_files(args.data_dir)
    train_rows = read_jsonl(files["train"], ("text", "label"))[: args.max_train_texts]
    test_rows = read_jsonl(files["test"], ("text", "label"))[: args.held_out_texts]
    train = [clean_review(r["text"]) for r in train_rows]
    test = [clean_review(r["text"]) for r in test_rows]
    tokenizer = tiny.train_tokenizer(train, args.vocab_size)
    model = tiny.make_classifier(tokenizer, args.n_layer, args.n_embd, args.n_head,
                                 n_positions=args.max_length, seed=args.seed)
    stats = tiny.train_classifier(model, tokenizer, train, [int(r["label"]) for r in train_rows], steps=args.steps,
                                  batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                                  seed=args.seed, time_budget_s=args.time_budget)
    acc = tiny.accuracy(model, tokenizer, test, [int(r["label"]) for r in test_rows], args.max_length)
    metrics = {**vars(args), **stats, "held_out_accuracy": acc, "held_out_texts": len(test)}
    out = tiny.save(model, tokenizer, args.out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"held-out accuracy {acc:.4f} on {len(test)} test reviews after {stats['steps']} steps "
          f"({stats['train_s']:.0f} s); saved to {out}")
    return metrics


if __name__ == "__main__":
    main()
