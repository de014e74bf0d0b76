"""Section 7: one PPO update of the GPT-2-small-sized model in the four ways a real model trains — float32, bf16
autocast (float32 masters), + activation checkpointing, + LoRA — its seconds and peak memory each; section 8: the
peak memory of the KL evaluation (log-probs and full-vocabulary KL to π_ref) at a Llama-sized 128,256-token vocabulary,
unchunked against `train.logits_chunk`.

Each measurement runs in its own subprocess, so a peak is that setting's alone: on CUDA torch's peak allocation, on
CPU the process's peak resident memory (VmHWM) less what it held before the models were built (the interpreter and
imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vbon_exp.bench.rl import update_times
from vbon_exp.bench.scale import Scale, random_gpt2, random_prompts, synchronize

# name -> (train.mixed_precision, train.gradient_checkpointing, train.lora.rank)
VARIANTS = {
    "fp32": ("no", False, 0),
    "bf16 autocast": ("bf16", False, 0),
    "+ checkpointing": ("bf16", True, 0),
    "+ LoRA r16": ("bf16", True, 16),
}
# the PPO update measured: batch × (prompt + new tokens), one epoch, one minibatch (CPU: small enough for minutes)
PPO_SHAPE = {"cpu": {"batch": 8, "new_tokens": 32, "epochs": 1}, "cuda": {"batch": 32, "new_tokens": 48, "epochs": 4}}
KL_VOCAB = 128_256  # Llama 3's vocabulary
KL_SHAPE = {"batch": 32, "new_tokens": 64, "hidden": 64}


def resident_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory (VmRSS) or its peak (VmHWM), from /proc; 0 where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_bytes(device: str, baseline: int) -> int:
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resident_bytes("VmHWM") - baseline


def ppo_trainer(scale: Scale, size: str, variant: str, device: str, shape: dict, run_dir: Path):
    """A PPOTrainer as a run builds it for `variant`: float32 policy (LoRA on the shared base), a frozen reference."""
    import copy

    from vbon_exp.adapters import LoraSettings
    from vbon_exp.bench.rl import BenchTask, ppo_config
    from vbon_exp.run import make_accelerator
    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import PPOTrainer, TrainConfig
    from vbon_exp.trainers.trainable import build_policy

    mixed, ckpt, rank = VARIANTS[variant]
    import torch

    reference = random_gpt2(scale, size, device=device)
    task = BenchTask(scale, reference, random_prompts(scale, shape["batch"] * 2, scale.prompt_len, seed=2))
    train = TrainConfig(checkpoint_every=0, mixed_precision=mixed, gradient_checkpointing=ckpt,
                        lora=LoraSettings(rank=rank))
    if rank:
        policy = build_policy(task, train, torch.device(device))
    else:
        policy = copy.deepcopy(reference).requires_grad_(True)
    cfg = ppo_config(1, batch=shape["batch"], epochs=shape["epochs"], minibatches=1, micro_batch_size=None,
                     lr=scale.lr)
    sampling = SamplingConfig(temperature=scale.temperature, max_new_tokens=shape["new_tokens"])
    return PPOTrainer(cfg, train, policy=policy, task=task, sampling=sampling,
                      sequence_reward=lambda samples, logp_ref: samples.rewards.double(), kl_coef=scale.beta,
                      accelerator=make_accelerator(torch.device(device), mixed), run_dir=run_dir, seed=0)


def ppo_child(scale: Scale, size: str, variant: str, device: str) -> dict:
    """Runs in a subprocess: one warm-up and one timed PPO update; seconds and peak memory of the process."""
    import torch

    baseline = resident_bytes()
    shape = PPO_SHAPE[device]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ppo_trainer(scale, size, variant, device, shape, Path(tmp))
        times = update_times(trainer, 1, device)  # one warm-up update, one timed
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"step_s": times[-1], "peak_bytes": peak_bytes(device, baseline), "trainable_params": trainable,
            "threads": torch.get_num_threads(), **shape}


def kl_child(chunk: int, device: str, vocab: int = KL_VOCAB) -> dict:
    """Runs in a subprocess: log-probs and full KL to another model of 32 × 64 response positions at a `vocab`-token
    vocabulary (no gradients), `chunk` positions at a time (0 = all at once); peak memory of the process."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from vbon_exp.logprobs import response_token_stats
    from vbon_exp.modeling import Samples

    baseline = resident_bytes()
    b, length, hidden = KL_SHAPE["batch"], KL_SHAPE["new_tokens"], KL_SHAPE["hidden"]
    config = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=hidden, n_layer=1, n_head=2)
    torch.manual_seed(0)
    policy, other = (GPT2LMHeadModel(config).to(device).eval() for _ in range(2))
    weights = peak_bytes(device, baseline)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(vocab, (b, 8 + length), generator=g).to(device)
    ones = torch.ones_like(ids)
    samples = Samples(torch.arange(b), ids[:, :8], ones[:, :8], ids[:, 8:], ones[:, 8:])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.no_grad():
        stats = response_token_stats(policy, samples, 1.0, chunk=chunk, other=other, kl=True)
    synchronize(device)
    seconds = time.perf_counter() - t0
    return {"chunk": chunk, "peak_bytes": peak_bytes(device, baseline) - (0 if device == "cuda" else weights),
            "seconds": seconds, "kl_mean": float(stats.kl.mean()), "positions": b * length, "vocab": vocab}


def run_child(kind: str, args: dict, toy: bool) -> dict:
    """`python -m vbon_exp.bench --memory-child <json>` in a fresh process; its JSON result."""
    spec = json.dumps({"kind": kind, **args})
    cmd = [sys.executable, "-m", "vbon_exp.bench", "--memory-child", spec] + (["--toy"] if toy else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    if done.returncode != 0:
        raise RuntimeError(f"memory child {spec} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(spec: str, scale: Scale) -> int:
    args = json.loads(spec)
    kind = args.pop("kind")
    result = ppo_child(scale, **args) if kind == "ppo" else kl_child(**args, vocab=min(scale.vocab * 10, KL_VOCAB))
    print(json.dumps(result))
    return 0


def bench_precision(size: str, device: str, toy: bool) -> dict:
    """Section 7: {variant: {step_s, peak_gb, ...}} for the PPO update on the `size` model."""
    from vbon_exp.cpu_features import EMULATED_BF16_SLOWDOWN, cpu_bf16_native

    out = {}
    for variant, (mixed, _, _) in VARIANTS.items():
        if device == "cpu" and mixed == "bf16" and not cpu_bf16_native():
            # emulated bf16 takes minutes for nothing (~21× float32): the fp32 row × the known slowdown says enough
            out[variant] = {"skipped": f"no bf16 instructions on this CPU (emulated: ~{EMULATED_BF16_SLOWDOWN:.0f}× "
                                       "slower than float32)"}
            continue
        r = run_child("ppo", {"size": size, "variant": variant, "device": device}, toy)
        out[variant] = {**r, "peak_gb": r["peak_bytes"] / 2**30}
    return {"ppo_precision": out, "ppo_precision_size": size}


def bench_kl_memory(device: str, toy: bool) -> dict:
    """Section 8: {chunk: {peak_gb, seconds}} of the 128k-vocabulary KL evaluation."""
    out = {}
    for chunk in (0, 1024, 256):
        r = run_child("kl", {"chunk": chunk, "device": device}, toy)
        out[str(chunk)] = {**r, "peak_gb": r["peak_bytes"] / 2**30}
    return {"kl_eval_memory": out}
