"""Sentiment classifiers on the pretrained SmolLM2-135M backbone, trained here on the local IMDB labels:
the proxy reward `reward=smollm2_imdb` and an independent gold judge (`eval.judges`) trained on the other half.

    python scripts/train_smollm2_reward.py [--model outputs/models/smollm2_135m] [--data-dir ../shared/data/imdb]

Each classifier is a standard `LlamaForSequenceClassification` (loadable with AutoModelForSequenceClassification):
the first `--layers` blocks of SmolLM2 (the lower `--layers − --tune` frozen, the top `--tune` fine-tuned), the
final norm and a linear head on the last token, labels NEGATIVE / POSITIVE; r(y) = p(POSITIVE | prompt + response).
It is trained on inputs shaped like what it scores: review prefixes of `--min-tokens`..`--max-tokens` tokens (a prompt
of 2–8 tokens plus a continuation), labelled with the review's label. The train reviews are split in two disjoint
halves by a seeded permutation: the proxy learns from one, the gold judge from the other, so the policy never trains
on the judge's labels. The frozen lower blocks run once per snippet (their outputs are cached); only the top blocks
and the head see gradients: a few minutes on 2 cores.

Reported (metrics.json in each directory, and printed): held-out accuracy on test-split snippets and on full test
reviews (first 256 tokens), beside the tiny classifier's (outputs/tiny/imdb_reward) and VADER's on the same texts."""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vbon_exp.progress import progress  # noqa: E402
from vbon_exp.tasks.data import local_split_files, read_jsonl  # noqa: E402
from vbon_exp.tasks.imdb import clean_review  # noqa: E402
from vbon_exp.tiny import save, warmup_cosine  # noqa: E402

log = logging.getLogger("train_smollm2_reward")
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def snippets(rows: list[dict], tokenizer, lo: int, hi: int, seed: int) -> list[tuple[list[int], int]]:
    """(the first k tokens of each review, k uniform in [lo, hi]; the review's label)."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        ids = tokenizer(clean_review(r["text"])[: 12 * hi], add_special_tokens=False).input_ids
        out.append((ids[: rng.randint(lo, hi)], int(r["label"])))
    return out


def right_padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


@torch.no_grad()
def lower_states(base, seqs: list[list[int]], frozen: int, pad_id: int, batch: int = 64) -> list[torch.Tensor]:
    """The output of block `frozen` (before any norm) for each sequence, unpadded: [len, H] each."""
    out: list[torch.Tensor] = [None] * len(seqs)  # type: ignore[list-item]
    depth = base.config.num_hidden_layers
    base.config.num_hidden_layers = frozen + 1  # transformers runs only these; the last hidden state is normed
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in progress(range(0, len(order), batch), desc=f"frozen blocks 1-{frozen}", unit="batch"):
        rows = order[start : start + batch]
        ids, mask = right_padded([seqs[i] for i in rows], pad_id)
        hidden = base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[frozen]
        for j, i in enumerate(rows):
            out[i] = hidden[j, : len(seqs[i])].clone()
    base.config.num_hidden_layers = depth
    return out


def padded_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(s.shape[0] for s in states)
    x = torch.zeros(len(states), width, states[0].shape[1])
    mask = torch.zeros(len(states), width, dtype=torch.long)
    for i, s in enumerate(states):
        x[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = 1
    return x, mask


def upper_logits(upper, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The top blocks, the final norm and the head on the last real token: what LlamaForSequenceClassification
    computes for right-padded input."""
    hidden = upper.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
    last = hidden[torch.arange(len(x)), mask.sum(-1) - 1]
    return upper.score(last).float()


def make_upper(base_config, base_state: dict, frozen: int, tune: int, seed: int):
    """A LlamaForSequenceClassification of the `tune` blocks above block `frozen`, initialised from SmolLM2."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = AutoConfig.for_model(**{**base_config.to_dict(), "num_hidden_layers": tune, "num_labels": 2,
                                     "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}})
    upper = AutoModelForSequenceClassification.from_config(config)
    state = {f"model.layers.{i}.{k.split('.', 2)[2]}": v for k, v in base_state.items()
             for i in range(tune) if k.startswith(f"layers.{frozen + i}.")}
    state["model.norm.weight"] = base_state["norm.weight"]
    missing, _ = upper.load_state_dict(state, strict=False)
    assert set(missing) <= {"score.weight", "model.embed_tokens.weight"}, missing
    torch.nn.init.normal_(upper.score.weight, std=0.01)
    return upper


def train_upper(upper, states, labels, *, epochs: int, batch: int, lr: float, seed: int) -> dict:
    params = [p for n, p in upper.named_parameters() if not n.startswith("model.embed_tokens")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(states) + batch - 1) // batch)
    sched = warmup_cosine(opt, steps)
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    upper.train()
    t0 = time.perf_counter()
    bar = progress(range(steps), desc="training the top blocks", unit="step")
    per_epoch = steps // epochs
    order = torch.randperm(len(states), generator=g)
    for step in bar:
        if step and step % per_epoch == 0:
            order = torch.randperm(len(states), generator=g)
        rows = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        x, mask = padded_states([states[i] for i in rows])
        loss = torch.nn.functional.cross_entropy(upper_logits(upper, x, mask), y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    upper.eval()
    return {"steps": steps, "train_s": round(time.perf_counter() - t0, 1)}


def assemble(base, upper, frozen: int, tune: int):
    """The whole classifier: SmolLM2's embeddings and blocks 1..frozen, then the tuned blocks, norm and head."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(**{**upper.config.to_dict(), "num_hidden_layers": frozen + tune})
    config.pad_token_id = base.config.pad_token_id
    model = AutoModelForSequenceClassification.from_config(config)
    state = {f"model.{k}": v for k, v in base.state_dict().items()
             if not k.startswith("layers.") or int(k.split(".")[1]) < frozen}
    for k, v in upper.state_dict().items():
        if k.startswith("model.layers."):
            i = int(k.split(".")[2])
            state[f"model.layers.{frozen + i}.{k.split('.', 3)[3]}"] = v
        elif not k.startswith("model.embed_tokens"):
            state[k] = v
    model.load_state_dict(state, strict=True)
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model, tokenizer, texts: list[str], labels: list[int], max_length: int,
                        batch: int = 32) -> float:
    """Accuracy of any sequence classifier with a POSITIVE class, reading the texts as the reward does."""
    pos = {v: int(k) for k, v in model.config.id2label.items()}["POSITIVE"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    correct = 0
    for start in progress(range(0, len(order), batch), desc="accuracy", unit="batch"):
        rows = order[start : start + batch]
        enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        pred = model(**enc).logits.argmax(-1) == pos
        correct += int((pred == torch.tensor([labels[i] == 1 for i in rows])).sum())
    return correct / len(texts)


def vader_accuracy(texts: list[str], labels: list[int]) -> float:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return sum((analyzer.polarity_scores(t)["compound"] > 0) == (y == 1) for t, y in zip(texts, labels)) / len(texts)


def held_out_sets(tokenizer, test_rows, args) -> dict:
    """Test-split snippets (decoded, as the reward reads them) and full reviews, with their labels."""
    snips = snippets(test_rows[: args.test_snippets], tokenizer, args.min_tokens, args.max_tokens, args.seed + 7)
    reviews = test_rows[-args.test_reviews:]
    return {"snippets": ([tokenizer.decode(s) for s, _ in snips], [y for _, y in snips], args.max_length),
            "full_reviews": ([clean_review(r["text"]) for r in reviews], [int(r["label"]) for r in reviews], 256)}


def accuracies(model, tokenizer, sets: dict) -> dict:
    return {name: round(classifier_accuracy(model, tokenizer, t, y, n), 4) for name, (t, y, n) in sets.items()}


def comparisons(sets: dict, tiny_dir: Path) -> dict:
    """The tiny classifier's and VADER's accuracy on the same held-out texts."""
    out = {"vader": {name: round(vader_accuracy(t, y), 4) for name, (t, y, _) in sets.items()}}
    if (tiny_dir / "config.json").is_file():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tiny = AutoModelForSequenceClassification.from_pretrained(tiny_dir).eval()
        out["tiny"] = {name: round(classifier_accuracy(tiny, AutoTokenizer.from_pretrained(tiny_dir), t, y, n), 4)
                       for name, (t, y, n) in sets.items()}
    else:
        log.warning("no tiny classifier at %s (python scripts/train_tiny_reward.py): compared with VADER only",
                    tiny_dir)
    return out


def build_one(name: str, rows, base, tokenizer, sets, args, seed: int) -> dict:
    frozen = args.layers - args.tune
    snips = snippets(rows[: args.train_snippets], tokenizer, args.min_tokens, args.max_tokens, seed)
    log.info("%s: %d train snippets of %d-%d tokens; caching blocks 1-%d", name, len(snips), args.min_tokens,
             args.max_tokens, frozen)
    states = lower_states(base, [s for s, _ in snips], frozen, tokenizer.pad_token_id)
    upper = make_upper(base.config, base.state_dict(), frozen, args.tune, seed)
    stats = train_upper(upper, states, [y for _, y in snips], epochs=args.epochs, batch=args.batch_size,
                        lr=args.lr, seed=seed)
    model = assemble(base, upper, frozen, args.tune)
    acc = accuracies(model, tokenizer, sets)
    out = save(model, tokenizer, Path(args.out_dir) / name)
    metrics = {"name": name, **{k: v for k, v in vars(args).items()}, "seed": seed, **stats,
               "train_reviews": "half A of the train split" if name.endswith("reward") else "half B of the train split",
               "held_out_accuracy": acc, "parameters": sum(p.numel() for p in model.parameters())}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("%s: held-out accuracy %s; saved to %s", name, acc, out)
    return metrics


def write_summary(model: Path, out_dir: Path, path: Path) -> dict:
    """The records of the converted model and both classifiers in one file, without this machine's paths."""
    summary = {}
    for name, record in ((model.name, model / "conversion.json"), *((n, out_dir / n / "metrics.json") for n in (
            "smollm2_imdb_reward", "smollm2_imdb_gold"))):
        if not record.is_file():
            raise SystemExit(f"{record} is missing: `make real-model` makes it")
        data = json.loads(record.read_text())
        summary[name] = {k: v for k, v in data.items() if k not in ("model", "data_dir", "out_dir", "tiny", "source")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "outputs" / "models" / "smollm2_135m"))
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "imdb"))
    p.add_argument("--out-dir", default=str(ROOT / "outputs" / "models"))
    p.add_argument("--tiny", default=str(ROOT / "outputs" / "tiny" / "imdb_reward"))
    p.add_argument("--layers", type=int, default=18, help="blocks of SmolLM2 the classifier keeps (of 30)")
    p.add_argument("--tune", type=int, default=4, help="of those, the top blocks fine-tuned")
    p.add_argument("--min-tokens", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--max-length", type=int, default=64, help="the reward's input cap (tokens) for snippets")
    p.add_argument("--train-snippets", type=int, default=6000, help="per classifier")
    p.add_argument("--test-snippets", type=int, default=1000)
    p.add_argument("--test-reviews", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary-to", default=None, metavar="JSON",
                   help="write what the model directories record (conversion.json, both metrics.json; no local "
                        "paths) to this file and exit: docs/results/imdb_smollm2/models.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.summary_to:
        return write_summary(Path(args.model), Path(args.out_dir), Path(args.summary_to))
    from transformers import AutoModel, AutoTokenizer

    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"--model {args.model} does not exist: make it with `python -m vbon_exp.gguf_import`")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    base = AutoModel.from_pretrained(args.model).eval().requires_grad_(False)
    files = local_split_files(args.data_dir)
    train_rows = read_jsonl(files["train"], ("text", "label"))
    random.Random(args.seed).shuffle(train_rows)
    half = len(train_rows) // 2
    test_rows = read_jsonl(files["test"], ("text", "label"))
    random.Random(args.seed + 1).shuffle(test_rows)
    sets = held_out_sets(tokenizer, test_rows, args)
    proxy = build_one("smollm2_imdb_reward", train_rows[:half], base, tokenizer, sets, args, args.seed)
    gold = build_one("smollm2_imdb_gold", train_rows[half:], base, tokenizer, sets, args, args.seed + 1)
    others = comparisons(sets, Path(args.tiny))
    summary = {"proxy": proxy["held_out_accuracy"], "gold": gold["held_out_accuracy"], **others}
    for name in ("smollm2_imdb_reward", "smollm2_imdb_gold"):
        path = Path(args.out_dir) / name / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "compared_on_the_same_texts": summary}, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
