#!/usr/bin/env python
"""`make bench`: throughput of vbon_exp's sampler, RLOO step and reference cache against the usual baselines.

Prints a table and writes outputs/bench/summary.json (`--out`). Three measurements, each on random models (no hub):

1. Sampling, batch 64 × 48 new tokens at temperature 0.7, no EOS (every row generates all 48 tokens on both sides):
   `vbon_exp.sampling.sample_responses` against `transformers` `model.generate(do_sample=True)` with the same
   distribution (top_k/top_p off, eos_token_id=None), on a 2-layer/128-wide GPT-2 ("tiny") and a GPT-2-small-sized
   one (12 layers, 768 wide), both with GPT-2's 50,257-token vocabulary. Same process, same torch threads,
   alternating ours and generate after one warm-up call each; the median of `--reps` calls per side.
2. One RLOO update: vbon_exp's RLOOTrainer (rollout, scoring, log-probs, one optimiser step) against TRL's
   RLOOTrainer step (`pip install -e '.[bench]'`), on the same tiny policy and reference, prompts, reward (a fixed
   random table averaged over the completion's tokens), 16 prompts × k = 4 completions = 64 per step, 48 completion
   tokens at most, β = 0.05, one optimisation pass per step, float32, no vLLM. The median over `--rl-steps` steps per
   side after one warm-up step.
3. A reference cache (`build_reference_cache`, `--cache-prompts` prompts × M = `--cache-m`, keep_texts = 0) on the
   tiny model, built in a subprocess: bytes on disk per cached reward (every file in the cache directory) and the
   build's peak RSS (its own getrusage).

Benchmarks are not tests: nothing here asserts a time. Run it on an idle machine (`uptime`'s load average is
printed with the results); `--skip-trl`, `--skip-small` etc. shorten it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

VOCAB = 50257
BATCH = 64
NEW_TOKENS = 48
TEMPERATURE = 0.7
PROMPT_LEN = 16
RLOO_K = 4
BETA = 0.05
LR = 1e-5

SIZES = {"tiny": dict(n_layer=2, n_embd=128, n_head=2), "small": dict(n_layer=12, n_embd=768, n_head=12)}


def random_gpt2(size: str, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=1024, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
                        **SIZES[size])
    return GPT2LMHeadModel(config).eval()


def random_prompts(n: int, length: int, seed: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB - 1, (n, length), generator=g).tolist()


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class ForeignCpu:
    """How many cores other processes kept busy while the bench ran: the machine's busy time (/proc/stat) minus
    this process's and its children's CPU time, per second of wall time. Near 0 on an idle machine; the bench's
    own load (which the load average includes) does not count."""

    @staticmethod
    def _busy_s() -> float | None:
        try:
            fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy_s(), self._own_s()

    def cores(self) -> float | None:
        busy = self._busy_s()
        if busy is None or self.busy0 is None:
            return None
        return max(0.0, (busy - self.busy0) - (self._own_s() - self.own0)) / (time.perf_counter() - self.t0)


# --------------------------------------------------------------------------- 1. sampler vs generate


def bench_sampler(size: str, reps: int) -> dict:
    import torch
    from transformers import GenerationConfig

    from vbon_exp.sampling import SamplingConfig, sample_responses

    model = random_gpt2(size)
    prompts = random_prompts(BATCH, PROMPT_LEN, seed=1)
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)
    cfg = SamplingConfig(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, batch_size=BATCH)
    gen_cfg = GenerationConfig(do_sample=True, temperature=TEMPERATURE, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
                               min_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0, bos_token_id=None)
    model.generation_config.eos_token_id = None  # no EOS anywhere: both sides generate all 48 tokens
    model.generation_config.pad_token_id = 0

    def ours(seed: int) -> int:
        s = sample_responses(model, prompts, 1, cfg, eos_id=None, pad_id=0,
                             generator=torch.Generator().manual_seed(seed))
        return int(s.response_mask.sum())

    def generate(seed: int) -> int:
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
        return int((out.shape[1] - ids.shape[1]) * out.shape[0])

    times: dict[str, list[float]] = {"ours": [], "generate": []}
    for name, fn in (("ours", ours), ("generate", generate)):  # warm-up (allocations, kernel selection)
        assert fn(0) == BATCH * NEW_TOKENS, f"{name} did not generate {BATCH}×{NEW_TOKENS} tokens"
    for rep in range(reps):
        for name, fn in (("ours", ours), ("generate", generate)):
            t0 = time.perf_counter()
            tokens = fn(rep + 1)
            times[name].append(time.perf_counter() - t0)
            assert tokens == BATCH * NEW_TOKENS
    tokens = BATCH * NEW_TOKENS
    ours_tok_s = tokens / statistics.median(times["ours"])
    gen_tok_s = tokens / statistics.median(times["generate"])
    return {
        f"sampler_tok_s_{size}": ours_tok_s,
        f"generate_tok_s_{size}": gen_tok_s,
        f"sampler_speedup_{size}": ours_tok_s / gen_tok_s,
        f"sampler_times_s_{size}": times["ours"],
        f"generate_times_s_{size}": times["generate"],
    }


# --------------------------------------------------------------------------- 2. RLOO step: ours vs TRL


def table_reward_values(seed: int = 123):
    import torch

    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed))


class TableReward:
    """A cheap deterministic reward: the mean of a fixed random table over the response's tokens."""

    name = "bench-table"
    fingerprint = "bench-table:123"

    def __init__(self):
        self.table = table_reward_values()

    def __call__(self, samples):
        import torch

        mask = samples.response_mask.float().cpu()
        vals = self.table[samples.response_ids.cpu()] * mask
        return vals.sum(-1) / mask.sum(-1).clamp(min=1.0)


class BenchTask:
    """What the RL trainer reads from a task."""

    def __init__(self, reference, prompts):
        self.reference = reference.requires_grad_(False)
        self.train_prompts = prompts
        self.reward = TableReward()
        self.eos_id = VOCAB - 1
        self.pad_id = VOCAB - 1


def ours_rloo_step_times(steps: int) -> list[float]:
    import copy

    import torch
    from accelerate import Accelerator

    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import RLConfig, RLOOTrainer, TrainConfig

    policy = random_gpt2("tiny")
    task = BenchTask(copy.deepcopy(policy), random_prompts(BATCH // RLOO_K * (steps + 1), PROMPT_LEN, seed=2))
    cfg = RLConfig(name="rloo", lr=LR, batch_size=BATCH, num_minibatches=1, ppo_epochs=1, rloo_k=RLOO_K,
                   total_episodes=BATCH * (steps + 1), whiten_advantages=False, schedule="constant")
    sampling = SamplingConfig(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, batch_size=BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RLOOTrainer(cfg, TrainConfig(checkpoint_every=0), policy=policy, task=task, sampling=sampling,
                              sequence_reward=lambda samples, logp_ref: samples.rewards.double(), kl_coef=BETA,
                              accelerator=Accelerator(cpu=True), run_dir=Path(tmp), seed=0)
        times = []
        for update in range(steps + 1):  # the same work as one iteration of OnPolicyTrainer.train
            t0 = time.perf_counter()
            ro = trainer.rollout(update)
            trainer.compute_advantages(ro)
            trainer.optimise(ro, update)
            times.append(time.perf_counter() - t0)
    del trainer
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return times[1:]


def word_tokenizer():
    """A whitespace word-level tokenizer over VOCAB tokens "t0" … (the last one is EOS and pad), so TRL gets text
    prompts whose ids are exactly ours."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=f"t{VOCAB - 1}"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=f"t{VOCAB - 1}", pad_token=f"t{VOCAB - 1}",
                                   unk_token=f"t{VOCAB - 1}")
    fast.padding_side = "left"
    return fast


def trl_rloo_step_times(steps: int) -> list[float]:
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    tokenizer = word_tokenizer()
    prompts = random_prompts(BATCH // RLOO_K * (steps + 1), PROMPT_LEN, seed=2)
    texts = [" ".join(f"t{i}" for i in p) for p in prompts]
    assert tokenizer(texts[0])["input_ids"] == prompts[0]
    table = table_reward_values()

    def table_reward(prompts, completions, completion_ids, **kwargs):  # the same function as TableReward
        return [float(table[torch.tensor(ids)].mean()) if ids else 0.0 for ids in completion_ids]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        # TRL loads its reference model from the policy's path: give it the saved tiny policy (float32)
        random_gpt2("tiny").save_pretrained(Path(tmp) / "policy")
        policy = str(Path(tmp) / "policy")
        args = trl.RLOOConfig(
            output_dir=tmp, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, steps_per_generation=1,
            num_generations=RLOO_K, num_iterations=1, max_completion_length=NEW_TOKENS, temperature=TEMPERATURE,
            top_k=0, top_p=1.0, beta=BETA, learning_rate=LR, lr_scheduler_type="constant", max_steps=steps + 1,
            use_vllm=False, bf16=False, fp16=False, use_cpu=True, report_to="none", save_strategy="no",
            logging_steps=1, seed=0, dataloader_num_workers=0, disable_dropout=True, shuffle_dataset=False,
            model_init_kwargs={"dtype": torch.float32},
        )
        trainer = trl.RLOOTrainer(model=policy, reward_funcs=table_reward, args=args,
                                  train_dataset=Dataset.from_dict({"prompt": texts}), processing_class=tokenizer,
                                  callbacks=[timer])
        trainer.train()
    return timer.times[1:]


def bench_rloo(steps: int, skip_trl: bool) -> dict:
    out: dict = {}
    ours = ours_rloo_step_times(steps)
    out.update(step_s_ours=statistics.median(ours), step_times_s_ours=ours)
    if not skip_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            print("TRL is not installed (pip install -e '.[bench]'): skipping the TRL step", file=sys.stderr)
            return out
        theirs = trl_rloo_step_times(steps)
        out.update(step_s_trl=statistics.median(theirs), step_times_s_trl=theirs,
                   step_time_ratio_vs_trl=out["step_s_ours"] / statistics.median(theirs))
    return out


# --------------------------------------------------------------------------- 3. reference cache size and memory


def peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM of its own address space (getrusage's ru_maxrss would include
    the parent's, since Linux keeps it across fork and execve)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_cache_child(directory: str, prompts: int, m: int, new_tokens: int) -> None:
    """Runs in a subprocess: build one cache, print its numbers as JSON (peak RSS is this process's own)."""
    import torch

    from vbon_exp.reference import build_reference_cache
    from vbon_exp.sampling import SamplingConfig

    model = random_gpt2("tiny")
    prompt_ids = random_prompts(prompts, 8, seed=3)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=new_tokens, batch_size=256)
    t0 = time.perf_counter()
    cache = build_reference_cache(
        reference=model, reward=TableReward(), tokenizer=None, prompts=prompt_ids, m=m, sampling=sampling, seed=0,
        cache_dir=directory, key_parts={"reference": "bench-tiny", "reward": "bench-table", "prompts": "bench"},
        eos_id=VOCAB - 1, pad_id=VOCAB - 1, chunk_prompts=64, keep_texts=0,
    )
    build_s = time.perf_counter() - t0
    files = [p for p in cache.path.iterdir() if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    n_rewards = int(cache.lengths.sum())
    print(json.dumps({
        "bytes_per_cached_reward": size / n_rewards, "cache_bytes": size, "cache_files": len(files),
        "cache_rewards": n_rewards, "cache_build_s": build_s,
        "peak_rss_mb": peak_rss_mb(),
        "cache_build_torch_threads": torch.get_num_threads(),
    }))


def bench_cache(prompts: int, m: int, new_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, __file__, "--cache-child", tmp, "--cache-prompts", str(prompts), "--cache-m", str(m),
             "--cache-new-tokens", str(new_tokens)],
            capture_output=True, text=True, check=False,
        )
    if proc.returncode:
        raise RuntimeError(f"cache build failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main

TARGETS = {  # key: (comparison, bound)
    "sampler_speedup_tiny": (">=", 5.0),
    "sampler_speedup_small": (">=", 1.2),
    "step_time_ratio_vs_trl": ("<=", 0.8),
    "bytes_per_cached_reward": ("<=", 4.0),
}

ROWS = [
    ("sampler_tok_s_tiny", "tiny GPT-2 (2×128): ours, tokens/s", "{:,.0f}"),
    ("generate_tok_s_tiny", "tiny GPT-2: transformers.generate, tokens/s", "{:,.0f}"),
    ("sampler_speedup_tiny", "tiny GPT-2: speed-up", "{:.2f}×"),
    ("sampler_tok_s_small", "GPT-2-small-sized (12×768): ours, tokens/s", "{:,.0f}"),
    ("generate_tok_s_small", "GPT-2-small-sized: transformers.generate, tokens/s", "{:,.0f}"),
    ("sampler_speedup_small", "GPT-2-small-sized: speed-up", "{:.2f}×"),
    ("step_s_ours", "RLOO step (64 completions): ours, s", "{:.2f}"),
    ("step_s_trl", "RLOO step (64 completions): TRL, s", "{:.2f}"),
    ("step_time_ratio_vs_trl", "RLOO step time ratio ours / TRL", "{:.2f}"),
    ("bytes_per_cached_reward", "reference cache: bytes per reward", "{:.3f}"),
    ("peak_rss_mb", "reference cache build: peak RSS, MB", "{:,.0f}"),
    ("cache_build_s", "reference cache build: seconds", "{:.1f}"),
]


def verdict(key: str, value) -> str:
    if key not in TARGETS or value is None:
        return ""
    op, bound = TARGETS[key]
    ok = value >= bound if op == ">=" else value <= bound
    return f"target {op} {bound:g}: {'met' if ok else 'NOT met'}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench"), help="directory of summary.json")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per side for the sampler (median)")
    ap.add_argument("--rl-steps", type=int, default=3, help="timed RLOO steps per side after one warm-up step")
    ap.add_argument("--cache-prompts", type=int, default=512)
    ap.add_argument("--cache-m", type=int, default=256)
    ap.add_argument("--cache-new-tokens", type=int, default=8, help="response length of the cached samples")
    ap.add_argument("--skip-small", action="store_true", help="skip the GPT-2-small-sized sampler comparison")
    ap.add_argument("--skip-rl", action="store_true")
    ap.add_argument("--skip-trl", action="store_true", help="time our RLOO step only")
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--cache-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cache_child:
        build_cache_child(args.cache_child, args.cache_prompts, args.cache_m, args.cache_new_tokens)
        return 0

    import torch
    import transformers

    from vbon_exp.modeling import quiet_transformers

    quiet_transformers()
    summary: dict = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "python": platform.python_version(),
                    "load_average_1min_start": load_average()},
        "settings": {"batch": BATCH, "new_tokens": NEW_TOKENS, "temperature": TEMPERATURE, "prompt_len": PROMPT_LEN,
                     "vocab": VOCAB, "reps": args.reps, "rl_steps": args.rl_steps, "rloo_k": RLOO_K, "beta": BETA,
                     "cache_prompts": args.cache_prompts, "cache_m": args.cache_m,
                     "cache_new_tokens": args.cache_new_tokens},
    }
    try:
        import trl

        summary["machine"]["trl"] = trl.__version__
    except ImportError:
        pass
    stages = [("sampler tiny", lambda: bench_sampler("tiny", args.reps))]
    if not args.skip_small:
        stages.append(("sampler small", lambda: bench_sampler("small", args.reps)))
    if not args.skip_rl:
        stages.append(("RLOO step", lambda: bench_rloo(args.rl_steps, args.skip_trl)))
    if not args.skip_cache:
        stages.append(("reference cache", lambda: bench_cache(args.cache_prompts, args.cache_m,
                                                               args.cache_new_tokens)))
    foreign = ForeignCpu()
    for name, fn in stages:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        stage_foreign = ForeignCpu()
        summary.update(fn())
        summary["machine"].setdefault("other_processes_cores_by_stage", {})[name] = stage_foreign.cores()
        print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    summary["machine"]["load_average_1min_end"] = load_average()
    summary["machine"]["other_processes_cores"] = foreign.cores()
    summary["targets"] = {k: {"bound": f"{op} {b:g}", "value": summary.get(k),
                              "met": None if summary.get(k) is None else bool(verdict(k, summary[k]).endswith(" met"))}
                          for k, (op, b) in TARGETS.items()}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    width = max(len(label) for _, label, _ in ROWS)
    print(f"{'measurement':<{width}}  {'value':>12}  target")
    print("-" * (width + 40))
    for key, label, fmt in ROWS:
        value = summary.get(key)
        shown = fmt.format(value) if value is not None else "skipped"
        print(f"{label:<{width}}  {shown:>12}  {verdict(key, value)}")
    m = summary["machine"]
    print(f"\n{m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), transformers {m['transformers']}"
          + (f", trl {m['trl']}" if "trl" in m else "")
          + f"; load average {m['load_average_1min_start']:.2f} before the bench"
          + ("" if m["other_processes_cores"] is None else
             f"; other processes kept {m['other_processes_cores']:.2f} cores busy on average while it ran"))
    busy_elsewhere = m["other_processes_cores"]
    if (busy_elsewhere > 0.2) if busy_elsewhere is not None else m["load_average_1min_start"] > 0.5:
        print("warning: the machine was not idle: other processes shared the CPU, so the timings are pessimistic "
              "and noisy")
    print(f"written: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
