"""`make gpu-check` / `python -m vbon_exp.bench.gpu_check`: everything a GPU changes, in one command (≤ 10 minutes
on one GPU), ending in one table:
1. `make bench DEVICE=cuda`: the sampler, the PPO step, the reference cache, the precision / checkpointing / LoRA
   table and the 128k-vocabulary KL memory, vLLM when installed;
2. a short IMDB-shaped training and its evaluation (`python -m vbon_exp task=imdb objective=vbon`): a GPT-2-small-
   sized policy with random weights, prompts of 2–8 tokens, 48 new tokens, bf16 autocast, activation checkpointing,
   LoRA — the whole pipeline, checkpoints and results line included;
3. the same run's evaluation sampled by vLLM (`sampler=vllm`), when vLLM is installed.
Without CUDA it prints one line and exits 2. `--allow-cpu --toy` runs steps 2–3 at toy sizes on the CPU (a smoke
test of this script; its numbers mean nothing)."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORDS = {1: "wonderful great moving brilliant funny clever beautiful excellent charming superb".split(),
         0: "boring awful dull predictable terrible flat clumsy tedious bad lifeless".split()}
FILLER = "the movie film story acting cast plot scene ending music director script characters".split()


def reviews(n: int, seed: int) -> list[dict]:
    """`n` review-like texts with a sentiment label (no data set needed: IMDB's shape, not its content)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER if rng.random() < 0.6 else WORDS[label]) for _ in range(rng.randint(12, 30))]
        out.append({"text": " ".join(words).capitalize() + ".", "label": label})
    return out


def build_artifacts(root: Path, toy: bool) -> dict:
    """IMDB-format data (train/test jsonl), a GPT-2-small-sized random policy and a small random classifier."""
    from vbon_exp import tiny

    data = root / "imdb"
    data.mkdir(parents=True, exist_ok=True)
    texts = {}
    for split, seed in (("train", 0), ("test", 1)):
        rows = reviews(256, seed)
        texts[split] = [r["text"] for r in rows]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = tiny.train_tokenizer(texts["train"], vocab_size=300 if toy else 2000)
    size = {"n_layer": 1, "n_embd": 32, "n_head": 2} if toy else {"n_layer": 12, "n_embd": 768, "n_head": 12}
    policy = tiny.save(tiny.make_gpt2(tokenizer, n_positions=128, **size), tokenizer, root / "policy")
    reward = tiny.save(tiny.make_classifier(tokenizer, n_layer=1, n_embd=64, n_head=2), tokenizer, root / "reward")
    return {"data": data, "policy": policy, "reward": reward}


def training_overrides(art: dict, root: Path, device: str, toy: bool) -> list[str]:
    size = ["algo.total_episodes=64", "algo.batch_size=16", "task.max_new_tokens=8", "reference.m=16",
            "eval.samples_per_prompt=4"] if toy else [
        "algo.total_episodes=512", "algo.batch_size=32", "reference.m=64", "eval.samples_per_prompt=16"]
    return ["task=imdb", "objective=vbon", f"task.data_dir={art['data']}", "task.num_train_prompts=64",
            "task.num_test_prompts=32", f"model.name_or_path={art['policy']}", "reward=imdb_tiny",
            f"reward.name_or_path={art['reward']}", "reward.made_by=null", "model.made_by=null",
            "train.mixed_precision=bf16", "train.gradient_checkpointing=true", "train.lora.rank=16",
            f"device={device}", "wandb.mode=disabled", f"paths.output_root={root / 'out'}", *size,
            # the CPU smoke test keeps the GPU recipe's bf16 even where the CPU only emulates it (toy sizes: seconds)
            *(["train.allow_slow_bf16=true"] if device == "cpu" else [])]


def run_pipeline(overrides: list[str], run_dir: Path) -> dict:
    """`python -m vbon_exp <overrides>` in a subprocess; its results line and wall seconds."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vbon_exp", *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"status": "failed", "error": (done.stderr or done.stdout).strip().splitlines()[-1:], "wall_s": wall}
    line = json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])
    return {**line, "wall_s": wall}


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def run_bench(out: Path) -> dict:
    """Step 1: the bench on CUDA (its own table is printed as it runs); its summary."""
    cmd = [sys.executable, "-m", "vbon_exp.bench", "--device", "cuda", "--out", str(out)]
    code = subprocess.run(cmd, cwd=ROOT).returncode
    try:
        return {**json.loads((out / "summary.json").read_text()), "exit": code}
    except (OSError, ValueError):
        return {"exit": code}


def table(bench: dict, runs: dict[str, dict]) -> list[tuple[str, str]]:
    rows = []
    if bench:
        for key, label in (("sampler_tok_s_small", "sampler, GPT-2-small-sized (tok/s)"),
                           ("ppo_step_s", "PPO step, bench model (s)"), ("vllm_tok_s", "vLLM sampler (tok/s)"),
                           ("cache_samples_per_s", "reference cache (samples/s)")):
            if isinstance(bench.get(key), (int, float)):
                rows.append((label, f"{bench[key]:,.1f}"))
        for variant, r in bench.get("ppo_precision", {}).items():
            rows.append((f"PPO step GPT-2-small-sized, {variant}", f"{r['step_s']:.2f} s, peak {r['peak_gb']:.2f} GiB"))
        for chunk, r in bench.get("kl_eval_memory", {}).items():
            rows.append((f"KL eval at 128k vocabulary, chunk {chunk}", f"peak {r['peak_gb']:.2f} GiB"))
        rows.append(("bench exit status", str(bench.get("exit"))))
    for name, r in runs.items():
        if r.get("status") != "ok":
            rows.append((name, f"{'skipped' if r.get('status') == 'skipped' else 'FAILED'}: {r.get('error')}"))
            continue
        rows.append((name, f"{r['wall_s']:.0f} s; reward {r.get('reward', float('nan')):.3f}, KL "
                           f"{r.get('kl', float('nan')):.3f}, train {r.get('train_s', 0):.0f} s, update "
                           f"{r.get('train_update_tok_s', 0):,.0f} tok/s"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vbon_exp.bench.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check"))
    ap.add_argument("--allow-cpu", action="store_true", help="run steps 2–3 on the CPU (a smoke test)")
    ap.add_argument("--toy", action="store_true", help="toy sizes (with --allow-cpu)")
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
              "run it on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = run_bench(out / "bench") if cuda else {}
    art = build_artifacts(out / "artifacts", args.toy)
    device = "cuda" if cuda else "cpu"
    base = training_overrides(art, out, device, args.toy)
    runs = {"IMDB-shaped vBoN (bf16, ckpt, LoRA)": run_pipeline(base, out / "run-native")}
    if vllm_installed() and cuda:
        runs["same, sampler=vllm"] = run_pipeline([*base, "sampler=vllm"], out / "run-vllm")
    else:
        runs["same, sampler=vllm"] = {"status": "skipped", "error": "vLLM not installed" if cuda else "no CUDA"}
    rows = table(bench, runs)
    width = max(len(k) for k, _ in rows)
    print("\ngpu-check" + (f" on {bench.get('machine', {}).get('gpu')}" if bench else " (CPU smoke test)"))
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    (out / "gpu_check.json").write_text(json.dumps({"bench": bench, "runs": runs, "table": rows}, indent=1,
                                                   default=str))
    failed = any(r.get("status") == "failed" for r in runs.values()) or bench.get("exit", 0) not in (0, None)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
