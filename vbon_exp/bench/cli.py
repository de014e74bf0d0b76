"""`make bench` / `python -m vbon_exp.bench`: throughput of vbon_exp's sampler, RL steps and reference cache against
the usual baselines, on CPU (`--device cpu`, the default) or a CUDA GPU (`--device cuda`, bfloat16 by default).

Prints a table and writes outputs/bench/summary.json (`--out`). On random models (no hub); "tiny" is a 2-layer /
128-wide GPT-2, "small" a GPT-2-small-sized one (12 layers, 768 wide), both with GPT-2's 50,257-token vocabulary.
Sections (one module each in vbon_exp/bench/):
1. sampler: ours against transformers.generate (batch 64 × 48 new tokens, T 0.7, no EOS), on the tiny and the
   GPT-2-small-sized model (`--quick` skips the latter);
2. RLOO step (CPU): ours against TRL's RLOOTrainer on the tiny model (`pip install -e '.[bench]'`);
3. PPO step on the `--size` model (tiny on CPU, small on CUDA by default): seconds, episodes/s;
4. reference cache on the `--size` model, in a subprocess: bytes per reward, peak RSS, samples/s;
5. vLLM (CUDA, when installed): the sampler=vllm backend against ours;
6. busy core (CPU): the sampler and the RLOO step beside a spinning process, at `threads: auto` and at 2 threads;
7. precision: a PPO update of the GPT-2-small-sized model in float32, bf16 autocast, + checkpointing, + LoRA —
   seconds and peak memory each, each in its own subprocess (`--skip-precision` skips 7 and 8);
8. KL memory: peak memory of the log-probs + full KL evaluation at a 128,256-token vocabulary, unchunked against
   train.logits_chunk's chunks.

Every section reports the minimum and the median of its timed repetitions and the other processes' load while it
ran; a section run while other processes kept more than 0.2 of a core busy is timed again (`--retimes`), keeping the
least disturbed attempt. The bench itself uses `threads: auto` (`--threads`). GPU-hours of a run ≈ episodes /
ppo_episodes_per_s + (cache + eval samples) / cache_samples_per_s (`--estimate EPISODES CACHE_SAMPLES EVAL_SAMPLES`
reads a written summary). Benchmarks are not tests: nothing here asserts a time. A section that fails is reported
(table and summary `failed`) and the others still run; the exit status is then 1."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

from vbon_exp.bench import busy, cache, memory, report, rl, sampler, vllm
from vbon_exp.bench.scale import REAL, TOY, BenchSetupError, check_device
from vbon_exp.bench.timing import run_section

ROOT = Path(__file__).resolve().parents[2]

# What a device benchmarks unless told otherwise: on CPU float32, the tiny model for the PPO step and the cache
# (whose 8-token responses measure storage); on a GPU the GPT-2-small-sized model in bfloat16 and a cache of 128 ×
# 256 = 32,768 responses of 48 tokens (the IMDB task's length).
DEVICE_DEFAULTS = {
    "cpu": {"dtype": "float32", "size": "tiny", "cache_prompts": 512, "cache_m": 256, "cache_new_tokens": 8},
    "cuda": {"dtype": "bfloat16", "size": "small", "cache_prompts": 128, "cache_m": 256, "cache_new_tokens": 48},
}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m vbon_exp.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench"), help="directory of summary.json")
    ap.add_argument("--device", choices=sorted(DEVICE_DEFAULTS), default="cpu", help="where everything runs")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"),
                    help="weights dtype of the sampler, PPO, cache and vLLM models (default: bfloat16 on cuda, "
                         "float32 on cpu; the RLOO comparison with TRL is always float32)")
    ap.add_argument("--size", choices=("tiny", "small"),
                    help="model of the PPO, cache and vLLM sections (default: small on cuda, tiny on cpu)")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per side for the sampler")
    ap.add_argument("--rl-steps", type=int, default=3, help="timed RLOO (per side) and PPO steps after one warm-up")
    ap.add_argument("--retimes", type=int, default=2,
                    help="times a section disturbed by other processes (> 0.2 cores busy) is timed again")
    ap.add_argument("--threads", default="auto", help="torch threads of the bench: auto (vbon_exp/threads.py) or N")
    ap.add_argument("--ppo-batch", type=int, help="PPO episodes per update (default: algo.batch_size's, 32)")
    ap.add_argument("--ppo-epochs", type=int, help="PPO epochs per update (default: algo.ppo_epochs's, 4)")
    ap.add_argument("--num-minibatches", type=int, help="optimizer steps per PPO epoch (default: algo's, 1)")
    ap.add_argument("--micro-batch-size", type=int, help="sequences per forward/backward pass (default: all)")
    ap.add_argument("--cache-prompts", type=int, help="default: 512 on cpu, 128 on cuda")
    ap.add_argument("--cache-m", type=int, help="default: 256")
    ap.add_argument("--cache-new-tokens", type=int,
                    help="response length of the cached samples (default: 8 on cpu, 48 on cuda)")
    ap.add_argument("--quick", action="store_true", help="skip the GPT-2-small-sized sampler (the slowest section)")
    ap.add_argument("--skip-small", action="store_true", help="the same as --quick")
    ap.add_argument("--skip-rl", action="store_true", help="skip the RLOO comparison")
    ap.add_argument("--skip-trl", action="store_true", help="time our RLOO step only")
    ap.add_argument("--skip-ppo", action="store_true")
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--skip-busy", action="store_true", help="skip the busy-core section")
    ap.add_argument("--toy", action="store_true",
                    help="a smoke test of the bench itself: a 97-token vocabulary, 1-2 layer models, batch 8 × 3 "
                         "tokens (its numbers mean nothing)")
    ap.add_argument("--estimate", nargs=3, type=float, metavar=("EPISODES", "CACHE_SAMPLES", "EVAL_SAMPLES"),
                    help="print the hours of a run from --out's summary.json (no benchmark)")
    ap.add_argument("--cache-child", help=argparse.SUPPRESS)
    ap.add_argument("--vllm-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--skip-precision", action="store_true",
                    help="skip the PPO step's precision / checkpointing / LoRA table and the 128k-vocabulary KL memory")
    args = ap.parse_args(argv)
    for key, value in DEVICE_DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    from vbon_exp.trainers import RLConfig

    defaults = RLConfig()
    for key, field in (("ppo_batch", "batch_size"), ("ppo_epochs", "ppo_epochs"),
                       ("num_minibatches", "num_minibatches")):
        if getattr(args, key) is None:
            setattr(args, key, getattr(defaults, field))
    args.skip_small = args.skip_small or args.quick
    return args


def model_params(scale, size: str) -> int:
    """Parameters of the `size` model the PPO and cache sections use (built on the meta device: no memory)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(vocab_size=scale.vocab, **scale.sizes[size]))
    return sum(p.numel() for p in model.parameters())


def machine_info(device: str) -> dict:
    import torch

    from vbon_exp.cpu_features import cpu_bf16_native, cpu_description
    import transformers

    info = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "python": platform.python_version(), "load_average_1min_start": load_average(),
            "cpu": cpu_description(), "cpu_bf16_native": cpu_bf16_native()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gb=props.total_memory / 2**30,
                    cudnn=torch.backends.cudnn.version())
    for package in ("trl", "vllm"):  # installed versions, without importing them (vLLM's import is slow)
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def settings(args, scale) -> dict:
    return {"device": args.device, "dtype": args.dtype, "size": args.size, "toy": args.toy, "batch": scale.batch,
            "new_tokens": scale.new_tokens, "temperature": scale.temperature, "prompt_len": scale.prompt_len,
            "vocab": scale.vocab, "reps": args.reps, "rl_steps": args.rl_steps, "retimes": args.retimes,
            "rloo_k": scale.rloo_k, "beta": scale.beta, "ppo_batch": args.ppo_batch, "ppo_epochs": args.ppo_epochs,
            "num_minibatches": args.num_minibatches, "micro_batch_size": args.micro_batch_size,
            "cache_prompts": args.cache_prompts, "cache_m": args.cache_m, "cache_new_tokens": args.cache_new_tokens}


def stages(args, scale, summary: dict) -> tuple[list, dict[str, str]]:
    """[(name, thunk, retimes)] of the sections to run, and {name: why not} of those that cannot run here."""
    dev, dtype, size = args.device, args.dtype, args.size
    child = ["--toy"] if args.toy else []
    todo = [("sampler tiny", lambda: sampler.bench_sampler(scale, "tiny", args.reps, dev, dtype), args.retimes)]
    skipped = {}
    if args.skip_small:
        skipped["sampler small"] = "--quick / --skip-small"
    else:
        todo.append(("sampler small", lambda: sampler.bench_sampler(scale, "small", args.reps, dev, dtype),
                     args.retimes))
    if not args.skip_rl and dev != "cpu":
        skipped["RLOO step"] = "the RLOO comparison with TRL runs on the CPU (--device cpu)"
    elif not args.skip_rl:
        todo.append(("RLOO step", lambda: rl.bench_rloo(scale, args.rl_steps, args.skip_trl), args.retimes))
    if not args.skip_ppo:
        todo.append(("PPO step", lambda: rl.bench_ppo(
            scale, args.rl_steps, size, dev, dtype, batch=args.ppo_batch, epochs=args.ppo_epochs,
            minibatches=args.num_minibatches, micro_batch_size=args.micro_batch_size), args.retimes))
    if not args.skip_cache:
        todo.append(("reference cache", lambda: cache.bench_cache(
            child, args.cache_prompts, args.cache_m, args.cache_new_tokens, size, dev, dtype), args.retimes))
    if not args.skip_vllm:
        why = vllm.vllm_missing(dev)
        if why:
            skipped["vLLM sampler"] = why
        else:
            todo.append(("vLLM sampler", lambda: vllm.bench_vllm(child, size, dtype, args.reps), args.retimes))
    if args.skip_precision:
        skipped["precision"] = skipped["KL memory"] = "--skip-precision"
    else:  # the GPT-2-small-sized model whatever --size: the table is about a real model's memory
        todo.append(("precision", lambda: memory.bench_precision("small", dev, args.toy), 0))
        todo.append(("KL memory", lambda: memory.bench_kl_memory(dev, args.toy), 0))
    if args.skip_busy:
        skipped["busy core"] = "--skip-busy"
    elif dev != "cpu":
        skipped["busy core"] = "measured on the CPU (--device cpu)"
    else:  # the spinner is its own load: never re-timed for it
        todo.append(("busy core", lambda: busy.bench_busy(scale, args.reps, args.rl_steps, summary), 0))
    return todo, skipped


def run_child_mode(args, scale) -> int | None:
    """The subprocess sections (`--cache-child`, `--vllm-child`): run one and return 0; None when not a child."""
    if args.cache_child:
        cache.build_cache_child(scale, args.cache_child, args.cache_prompts, args.cache_m, args.cache_new_tokens,
                                args.size, args.device, args.dtype)
        return 0
    if args.vllm_child:
        vllm.vllm_child(scale, args.size, args.dtype, args.reps)
        return 0
    if args.memory_child:
        return memory.child_main(args.memory_child, scale)
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    scale = TOY if args.toy else REAL
    if args.estimate:
        return report.print_estimate(Path(args.out) / "summary.json", *args.estimate)
    try:
        check_device(args.device, args.dtype)
    except BenchSetupError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    child = run_child_mode(args, scale)
    if child is not None:
        return child

    import torch

    from vbon_exp.modeling import quiet_transformers
    from vbon_exp.threads import OtherLoad, resolve_threads

    quiet_transformers()
    threads, threads_reason = resolve_threads(int(args.threads) if args.threads != "auto" else "auto")
    torch.set_num_threads(threads)
    summary: dict = {"device": args.device, "dtype": args.dtype, "machine": machine_info(args.device),
                     "settings": settings(args, scale)}
    summary["gpu"] = summary["machine"].get("gpu")
    summary["bench_model_params"] = model_params(scale, args.size)  # what plan=true scales the rates by
    summary["machine"]["threads_reason"] = threads_reason
    todo, skipped = stages(args, scale, summary)
    if skipped:
        summary["skipped"] = skipped
    for name, why in skipped.items():
        print(f"[bench] {name}: skipped ({why})", file=sys.stderr, flush=True)
    whole = OtherLoad()
    for name, fn, retimes in todo:
        run_section(name, fn, summary, retimes)
    ours = summary.get(f"sampler_tok_s_{args.size}")
    if ours and "vllm_tok_s" in summary:
        summary["vllm_speedup_vs_ours"] = summary["vllm_tok_s"] / ours
    summary["machine"].update(load_average_1min_end=load_average(), other_processes_cores=whole.cores())
    if args.device == "cpu":
        summary["targets"] = report.targets(summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report.print_table(summary, out)
    return 1 if summary.get("failed") else 0
