#!/usr/bin/env python
"""`make bench`: throughput of vbon_exp's sampler, RL steps and reference cache against the usual baselines, on CPU
(`--device cpu`, the default) or a CUDA GPU (`--device cuda`, bfloat16 by default).

Prints a table and writes outputs/bench/summary.json (`--out`). Measurements, each on random models (no hub); "tiny"
is a 2-layer/128-wide GPT-2, "small" a GPT-2-small-sized one (12 layers, 768 wide), both with GPT-2's 50,257-token
vocabulary; `--size` picks the model of the PPO, cache and vLLM sections (tiny on CPU, small on CUDA by default) and
`--size tiny` shrinks every section to the tiny model:

1. Sampling, batch 64 × 48 new tokens at temperature 0.7, no EOS (every row generates all 48 tokens on both sides):
   `vbon_exp.sampling.sample_responses` against `transformers` `model.generate(do_sample=True)` with the same
   distribution (top_k/top_p off, eos_token_id=None), on the tiny and the small model. Same process, same torch
   threads, alternating ours and generate after one warm-up call each; the median of `--reps` calls per side.
2. One RLOO update (CPU only: the TRL comparison): vbon_exp's RLOOTrainer (rollout, scoring, log-probs, one
   optimiser step) against TRL's RLOOTrainer step (`pip install -e '.[bench]'`), on the same tiny policy and
   reference, prompts, reward (a fixed random table averaged over the completion's tokens), 16 prompts × k = 4
   completions = 64 per step, 48 completion tokens at most, β = 0.05, one optimisation pass per step, float32, no
   vLLM. The median over `--rl-steps` steps per side after one warm-up step.
3. One PPO update of vbon_exp's PPOTrainer on the `--size` model in `--dtype` on `--device`: rollout (sampling, the
   table reward, policy/value/reference log-probs), GAE, then ppo_epochs × num_minibatches optimizer steps (the
   algo defaults of RLConfig: `--ppo-batch`, `--ppo-epochs`, `--num-minibatches`, `--micro-batch-size`). The median
   over `--rl-steps` steps after one warm-up step; `ppo_episodes_per_s` = batch / step time.
4. A reference cache (`build_reference_cache`, `--cache-prompts` prompts × M = `--cache-m`, keep_texts = 0) on the
   `--size` model, built in a subprocess: bytes on disk per cached reward (every file in the cache directory), the
   build's peak RSS (its own getrusage), and `cache_samples_per_s` = cached rewards / build seconds (generation +
   scoring + writing).
5. vLLM (CUDA, when `vllm` is installed): the `sampler=vllm` backend (vbon_exp/vllm_backend.py) on the `--size`
   model at the setting of 1, in a subprocess; `vllm_speedup_vs_ours` compares it with our sampler's rate.

GPU-hours of a run ≈ episodes / ppo_episodes_per_s + (cache + eval samples) / cache_samples_per_s (`estimate_hours`,
`--estimate EPISODES CACHE_SAMPLES EVAL_SAMPLES` reads a written summary). Benchmarks are not tests: nothing here
asserts a time. Run it on an idle machine (`uptime`'s load average is printed with the results); `--skip-trl`,
`--skip-small` etc. shorten it. A section that fails is reported (table and summary `failed`) and the others still
run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
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

SIZES = {"tiny": {"n_layer": 2, "n_embd": 128, "n_head": 2}, "small": {"n_layer": 12, "n_embd": 768, "n_head": 12}}

# What a device benchmarks unless told otherwise: on CPU today's settings (float32, the tiny model for the RL step
# and the cache, whose 8-token responses measure storage); on a GPU the GPT-2-small-sized model in bfloat16 and a
# cache of 128 × 256 = 32,768 responses of 48 tokens (the IMDB task's length): enough batches of 256 for a steady
# rate, few enough for the whole bench to fit a 10-minute slot (an estimate: not yet timed on a GPU).
DEVICE_DEFAULTS = {
    "cpu": {"dtype": "float32", "size": "tiny", "cache_prompts": 512, "cache_m": 256, "cache_new_tokens": 8},
    "cuda": {"dtype": "bfloat16", "size": "small", "cache_prompts": 128, "cache_m": 256, "cache_new_tokens": 48},
}


class BenchSetupError(Exception):
    """The bench cannot run as asked (e.g. --device cuda without CUDA): main prints it on one line, exit status 2."""


def random_gpt2(size: str, seed: int = 0, device: str = "cpu", dtype: str = "float32"):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=1024, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
                        **SIZES[size])
    return GPT2LMHeadModel(config).to(device=device, dtype=getattr(torch, dtype)).eval()


def check_device(device: str, dtype: str) -> None:
    """Refuse what cannot run (BenchSetupError) before any model is built; warn about what runs but misleads."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise BenchSetupError(
            f"--device cuda but torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none, a CPU-only torch'}; visible devices: "
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): install a CUDA build of torch, e.g. make install "
            "TORCH=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128\", or use --device cpu")
    if device == "cpu" and dtype == "bfloat16":
        print("bench: warning: --dtype bfloat16 on CPU runs, but slowly (most CPUs have no fast bfloat16 matmul): "
              "these timings say little about either dtype", file=sys.stderr)


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock time covers it (CUDA calls return before they finish)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def reset_gpu_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_gb(device: str) -> dict:
    """{"peak_gpu_mem_gb": the most this process's tensors held since reset_gpu_peak} on CUDA, {} elsewhere."""
    import torch

    return {"peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30} if device == "cuda" else {}


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


def bench_sampler(size: str, reps: int, device: str = "cpu", dtype: str = "float32") -> dict:
    import torch
    from transformers import GenerationConfig

    from vbon_exp.sampling import SamplingConfig, sample_responses

    model = random_gpt2(size, device=device, dtype=dtype)
    prompts = random_prompts(BATCH, PROMPT_LEN, seed=1)
    ids = torch.tensor(prompts, device=device)
    mask = torch.ones_like(ids)
    cfg = SamplingConfig(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, batch_size=BATCH)
    gen_cfg = GenerationConfig(do_sample=True, temperature=TEMPERATURE, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
                               min_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0, bos_token_id=None)
    model.generation_config.eos_token_id = None  # no EOS anywhere: both sides generate all 48 tokens
    model.generation_config.pad_token_id = 0

    def ours(seed: int) -> int:
        s = sample_responses(model, prompts, 1, cfg, eos_id=None, pad_id=0,
                             generator=torch.Generator(device=device).manual_seed(seed))
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
            synchronize(device)
            t0 = time.perf_counter()
            tokens = fn(rep + 1)
            synchronize(device)
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


def rl_step_times(cfg, steps: int, size: str = "tiny", device: str = "cpu",
                  dtype: str = "float32") -> tuple[list[float], float]:
    """Seconds of each of `steps` updates of vbon_exp's trainer for `cfg` (RLConfig), after one warm-up update: the
    same work as one iteration of OnPolicyTrainer.train (rollout, advantages, ppo_epochs × num_minibatches optimizer
    steps), on a random `size` policy in `dtype` and a frozen copy of it as the reference. Also the optimizer steps
    an update took (counted by the trainer's scheduler, which steps once per optimizer step)."""
    import copy

    from accelerate import Accelerator

    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import ALGOS, TrainConfig

    policy = random_gpt2(size, device=device, dtype=dtype)
    per_prompt = cfg.rloo_k if cfg.name == "rloo" else 1
    task = BenchTask(copy.deepcopy(policy), random_prompts(cfg.batch_size // per_prompt * (steps + 1), PROMPT_LEN,
                                                           seed=2))
    sampling = SamplingConfig(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, batch_size=BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ALGOS[cfg.name](cfg, TrainConfig(checkpoint_every=0), policy=policy, task=task, sampling=sampling,
                                  sequence_reward=lambda samples, logp_ref: samples.rewards.double(), kl_coef=BETA,
                                  accelerator=Accelerator(cpu=device == "cpu"), run_dir=Path(tmp), seed=0)
        times = []
        for update in range(steps + 1):
            synchronize(device)
            t0 = time.perf_counter()
            ro = trainer.rollout(update)
            trainer.compute_advantages(ro)
            trainer.optimise(ro, update)
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return times[1:], trainer.scheduler.last_epoch / (steps + 1)


def ours_rloo_step_times(steps: int) -> list[float]:
    from vbon_exp.trainers import RLConfig

    cfg = RLConfig(name="rloo", lr=LR, batch_size=BATCH, num_minibatches=1, ppo_epochs=1, rloo_k=RLOO_K,
                   total_episodes=BATCH * (steps + 1), whiten_advantages=False, schedule="constant")
    return rl_step_times(cfg, steps)[0]


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


# --------------------------------------------------------------------------- 3. one PPO update


def ppo_config(steps: int, batch: int, epochs: int, minibatches: int, micro_batch_size: int | None):
    from vbon_exp.trainers import RLConfig

    cfg = RLConfig(name="ppo", lr=LR, batch_size=batch, ppo_epochs=epochs, num_minibatches=minibatches,
                   micro_batch_size=micro_batch_size, total_episodes=batch * (steps + 1), schedule="constant")
    cfg.check()
    return cfg


def bench_ppo(steps: int, size: str, device: str, dtype: str, **ppo) -> dict:
    """One PPO update's seconds (median over `steps`) and what they give for GPU-hour estimates: episodes/s."""
    cfg = ppo_config(steps, **ppo)
    reset_gpu_peak(device)
    times, optimizer_steps = rl_step_times(cfg, steps, size, device, dtype)
    step = statistics.median(times)
    out = {"ppo_step_s": step, "ppo_step_times_s": times, "ppo_episodes_per_s": cfg.batch_size / step,
           "ppo_optimizer_steps": optimizer_steps}
    out.update({f"ppo_{k}": v for k, v in gpu_peak_gb(device).items()})
    return out


# --------------------------------------------------------------------------- 4. reference cache size and memory


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


def build_cache_child(directory: str, prompts: int, m: int, new_tokens: int, size: str = "tiny",
                      device: str = "cpu", dtype: str = "float32") -> None:
    """Runs in a subprocess: build one cache, print its numbers as JSON (peak RSS is this process's own)."""
    import torch

    from vbon_exp.meters import GENERATION, SCORING
    from vbon_exp.reference import build_reference_cache
    from vbon_exp.sampling import SamplingConfig, sample_responses

    model = random_gpt2(size, device=device, dtype=dtype)
    prompt_ids = random_prompts(prompts, 8, seed=3)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=new_tokens, batch_size=256)
    # one small draw first, untimed: the GPU's kernel selection and allocator warm-up are not the cache's cost
    sample_responses(model, prompt_ids[:2], 1, sampling, eos_id=VOCAB - 1, pad_id=VOCAB - 1,
                     generator=torch.Generator(device=device).manual_seed(0))
    reset_gpu_peak(device)
    generated, scored = GENERATION.snapshot(), SCORING.snapshot()
    synchronize(device)
    t0 = time.perf_counter()
    cache = build_reference_cache(
        reference=model, reward=TableReward(), tokenizer=None, prompts=prompt_ids, m=m, sampling=sampling, seed=0,
        cache_dir=directory, key_parts={"reference": f"bench-{size}", "reward": "bench-table", "prompts": "bench"},
        eos_id=VOCAB - 1, pad_id=VOCAB - 1, chunk_prompts=64, keep_texts=0,
    )
    synchronize(device)
    build_s = time.perf_counter() - t0
    files = [p for p in cache.path.iterdir() if p.is_file()]
    size_bytes = sum(p.stat().st_size for p in files)
    n_rewards = int(cache.lengths.sum())
    print(json.dumps({
        "bytes_per_cached_reward": size_bytes / n_rewards, "cache_bytes": size_bytes, "cache_files": len(files),
        "cache_rewards": n_rewards, "cache_build_s": build_s, "cache_samples_per_s": n_rewards / build_s,
        "cache_gen_tok_s": GENERATION.since(generated)["rate"], "cache_score_samples_s": SCORING.since(scored)["rate"],
        "peak_rss_mb": peak_rss_mb(),
        "cache_build_torch_threads": torch.get_num_threads(),
        **{f"cache_{k}": v for k, v in gpu_peak_gb(device).items()},
    }))


def run_child(args: list[str], what: str, timeout: float | None = None) -> dict:
    """Run this script with `args` in a subprocess; its numbers are the last stdout line that is a JSON object (a
    library may print its own lines around it)."""
    proc = subprocess.run([sys.executable, __file__, "--vocab", str(VOCAB), *args], capture_output=True, text=True,
                          check=False, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{what} failed (exit status {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{what} printed no JSON line:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def bench_cache(prompts: int, m: int, new_tokens: int, size: str = "tiny", device: str = "cpu",
                dtype: str = "float32") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return run_child(["--cache-child", tmp, "--cache-prompts", str(prompts), "--cache-m", str(m),
                          "--cache-new-tokens", str(new_tokens), "--size", size, "--device", device,
                          "--dtype", dtype], "cache build")


# --------------------------------------------------------------------------- 5. the vLLM sampler


def vllm_child(size: str, dtype: str, reps: int) -> None:
    """Runs in a subprocess: time the `sampler=vllm` backend at bench_sampler's setting, print JSON. The torch model
    stays on the CPU (vLLM loads its own copy from the saved directory, so CUDA is first touched by vLLM)."""
    import torch
    import vllm

    import vbon_exp.vllm_backend  # noqa: F401  (registers sampler=vllm)
    from vbon_exp.sampling import SamplingConfig, sample_responses

    model = random_gpt2(size, dtype=dtype)
    prompts = random_prompts(BATCH, PROMPT_LEN, seed=1)
    # no tokenizer exists for the random model: token ids in, token ids out
    cfg = SamplingConfig(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, batch_size=BATCH, backend="vllm",
                         backend_options={"skip_tokenizer_init": True, "gpu_memory_utilization": 0.4})
    generator = torch.Generator().manual_seed(0)

    def call() -> float:
        t0 = time.perf_counter()
        s = sample_responses(model, prompts, 1, cfg, eos_id=None, pad_id=0, generator=generator)
        assert int(s.response_mask.sum()) == BATCH * NEW_TOKENS, "vLLM did not generate every token"
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        model.config._name_or_path = tmp
        startup = call()  # the engine starts (and compiles) on the first call
        times = [call() for _ in range(reps)]
    print(json.dumps({"vllm_tok_s": BATCH * NEW_TOKENS / statistics.median(times), "vllm_times_s": times,
                      "vllm_first_call_s": startup, "vllm_version": vllm.__version__}))


def vllm_missing(device: str) -> str | None:
    """Why the vLLM section cannot run here, or None when it can."""
    import importlib.util

    if device != "cuda":
        return "vLLM runs on CUDA GPUs only: --device cuda"
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install vllm)"
    return None


def bench_vllm(size: str, dtype: str, reps: int) -> dict:
    return run_child(["--vllm-child", "--size", size, "--dtype", dtype, "--reps", str(reps)], "vLLM sampler",
                     timeout=900)


# --------------------------------------------------------------------------- GPU-hour estimates


def estimate_hours(summary: dict, episodes: float, cache_samples: float, eval_samples: float) -> dict[str, float]:
    """Hours a run takes on the bench's device, model size and dtype: training episodes at the PPO step's rate,
    reference-cache and evaluation samples at the cache build's rate (both are sampling + scoring; evaluation's
    extra log-prob passes are a fraction of its sampling). {"train", "cache", "eval", "total"} in hours."""
    work = {"train": (episodes, "ppo_episodes_per_s"), "cache": (cache_samples, "cache_samples_per_s"),
            "eval": (eval_samples, "cache_samples_per_s")}
    hours = {}
    for part, (count, key) in work.items():
        rate = summary.get(key)
        if count and not (isinstance(rate, (int, float)) and rate > 0):
            raise ValueError(f"the bench summary has no {key} (run scripts/bench.py without --skip-ppo/--skip-cache)")
        hours[part] = count / rate / 3600 if count else 0.0
    hours["total"] = sum(hours.values())
    return hours


def print_estimate(summary_path: Path, episodes: float, cache_samples: float, eval_samples: float) -> int:
    try:
        summary = json.loads(summary_path.read_text())
        hours = estimate_hours(summary, episodes, cache_samples, eval_samples)
    except (OSError, ValueError) as err:
        print(f"bench: --estimate: {err}", file=sys.stderr)
        return 2
    s, m = summary.get("settings", {}), summary.get("machine", {})
    where = m.get("gpu") or f"{m.get('cpus')} CPUs"
    print(f"{where}, {summary.get('dtype')}, {s.get('size')} model: train {hours['train']:.2f} h + cache "
          f"{hours['cache']:.2f} h + eval {hours['eval']:.2f} h = {hours['total']:.2f} h")
    return 0


# --------------------------------------------------------------------------- main

TARGETS = {  # key: (comparison, bound); set for the CPU (`--device cpu`), not reported on a GPU
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

MODEL_NAMES = {"tiny": "tiny GPT-2", "small": "GPT-2-small-sized"}


def size_rows(s: dict) -> list[tuple[str, str, str]]:
    """The rows of the sections that run on the `--size` model (their labels name the settings)."""
    model = MODEL_NAMES.get(s["size"], s["size"])
    ppo = f"PPO step ({model}, {s['ppo_batch']} episodes, {s['ppo_epochs']}×{s['num_minibatches']} opt. steps)"
    rows = [
        ("ppo_step_s", ppo + ": s", "{:.2f}"),
        ("ppo_episodes_per_s", "PPO: episodes/s", "{:,.1f}"),
        ("cache_samples_per_s", f"reference cache ({model}, {s['cache_new_tokens']} tokens): samples/s",
         "{:,.0f}"),
        ("vllm_tok_s", f"vLLM sampler ({model}): tokens/s", "{:,.0f}"),
        ("vllm_speedup_vs_ours", "vLLM sampler / ours, tokens/s", "{:.2f}×"),
    ]
    if s["device"] == "cuda":
        rows += [("ppo_peak_gpu_mem_gb", "PPO step: peak GPU memory, GiB", "{:.1f}"),
                 ("cache_peak_gpu_mem_gb", "reference cache build: peak GPU memory, GiB", "{:.1f}")]
    return rows


def target_met(key: str, value) -> bool | None:
    """Whether `value` meets the target of `key`; None when it has none or was not measured."""
    if key not in TARGETS or value is None:
        return None
    op, bound = TARGETS[key]
    return bool(value >= bound if op == ">=" else value <= bound)


def verdict(key: str, value) -> str:
    met = target_met(key, value)
    if met is None:
        return ""
    op, bound = TARGETS[key]
    return f"target {op} {bound:g}: {'met' if met else 'NOT met'}"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench"), help="directory of summary.json")
    ap.add_argument("--device", choices=sorted(DEVICE_DEFAULTS), default="cpu", help="where everything runs")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"),
                    help="weights dtype of the sampler, PPO, cache and vLLM models (default: bfloat16 on cuda, "
                         "float32 on cpu; the RLOO comparison with TRL is always float32)")
    ap.add_argument("--size", choices=sorted(SIZES),
                    help="model of the PPO, cache and vLLM sections (default: small on cuda, tiny on cpu); tiny "
                         "also limits the sampler comparison to the tiny model")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per side for the sampler (median)")
    ap.add_argument("--rl-steps", type=int, default=3, help="timed RLOO (per side) and PPO steps after one warm-up")
    ap.add_argument("--ppo-batch", type=int, help="PPO episodes per update (default: algo.batch_size's, 32)")
    ap.add_argument("--ppo-epochs", type=int, help="PPO epochs per update (default: algo.ppo_epochs's, 4)")
    ap.add_argument("--num-minibatches", type=int, help="optimizer steps per PPO epoch (default: algo's, 1)")
    ap.add_argument("--micro-batch-size", type=int, help="sequences per forward/backward pass (default: all)")
    ap.add_argument("--cache-prompts", type=int, help="default: 512 on cpu, 128 on cuda")
    ap.add_argument("--cache-m", type=int, help="default: 256")
    ap.add_argument("--cache-new-tokens", type=int,
                    help="response length of the cached samples (default: 8 on cpu, 48 on cuda)")
    ap.add_argument("--skip-small", action="store_true", help="skip the GPT-2-small-sized sampler comparison")
    ap.add_argument("--skip-rl", action="store_true", help="skip the RLOO comparison")
    ap.add_argument("--skip-trl", action="store_true", help="time our RLOO step only")
    ap.add_argument("--skip-ppo", action="store_true")
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--estimate", nargs=3, type=float, metavar=("EPISODES", "CACHE_SAMPLES", "EVAL_SAMPLES"),
                    help="print the hours of a run from --out's summary.json (no benchmark)")
    ap.add_argument("--cache-child", help=argparse.SUPPRESS)
    ap.add_argument("--vllm-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)  # the parent's VOCAB, for the children
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
    return args


def machine_info(device: str) -> dict:
    import torch
    import transformers

    info = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "python": platform.python_version(), "load_average_1min_start": load_average()}
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


def settings(args) -> dict:
    return {"device": args.device, "dtype": args.dtype, "size": args.size, "batch": BATCH, "new_tokens": NEW_TOKENS,
            "temperature": TEMPERATURE, "prompt_len": PROMPT_LEN, "vocab": VOCAB, "reps": args.reps,
            "rl_steps": args.rl_steps, "rloo_k": RLOO_K, "beta": BETA, "ppo_batch": args.ppo_batch,
            "ppo_epochs": args.ppo_epochs, "num_minibatches": args.num_minibatches,
            "micro_batch_size": args.micro_batch_size, "cache_prompts": args.cache_prompts, "cache_m": args.cache_m,
            "cache_new_tokens": args.cache_new_tokens}


def stages(args) -> tuple[list, dict[str, str]]:
    """[(name, thunk)] of the sections to run, and {name: why not} of those that cannot run here."""
    dev, dtype, size = args.device, args.dtype, args.size
    todo, skipped = [("sampler tiny", lambda: bench_sampler("tiny", args.reps, dev, dtype))], {}
    if not args.skip_small and size != "tiny":
        todo.append(("sampler small", lambda: bench_sampler("small", args.reps, dev, dtype)))
    if not args.skip_rl and dev != "cpu":
        skipped["RLOO step"] = "the RLOO comparison with TRL runs on the CPU (--device cpu)"
    elif not args.skip_rl:
        todo.append(("RLOO step", lambda: bench_rloo(args.rl_steps, args.skip_trl)))
    if not args.skip_ppo:
        todo.append(("PPO step", lambda: bench_ppo(
            args.rl_steps, size, dev, dtype, batch=args.ppo_batch, epochs=args.ppo_epochs,
            minibatches=args.num_minibatches, micro_batch_size=args.micro_batch_size)))
    if not args.skip_cache:
        todo.append(("reference cache", lambda: bench_cache(args.cache_prompts, args.cache_m, args.cache_new_tokens,
                                                             size, dev, dtype)))
    if not args.skip_vllm:
        why = vllm_missing(dev)
        if why:
            skipped["vLLM sampler"] = why
        else:
            todo.append(("vLLM sampler", lambda: bench_vllm(size, dtype, args.reps)))
    return todo, skipped


def run_stages(todo, summary: dict) -> None:
    """Run each section; one that fails is recorded (summary["failed"]) and the others still run."""
    import torch

    for name, fn in todo:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        stage_foreign = ForeignCpu()
        try:
            summary.update(fn())
        except Exception as err:  # noqa: BLE001 (an unattended GPU run keeps the other sections' numbers)
            traceback.print_exc()
            summary.setdefault("failed", {})[name] = f"{type(err).__name__}: {err}"[:2000]
        summary["machine"].setdefault("other_processes_cores_by_stage", {})[name] = stage_foreign.cores()
        print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    ours = summary.get(f"sampler_tok_s_{summary['settings']['size']}")
    if ours and "vllm_tok_s" in summary:
        summary["vllm_speedup_vs_ours"] = summary["vllm_tok_s"] / ours


def print_table(summary: dict, out: Path) -> None:
    rows = ROWS + size_rows(summary["settings"])
    width = max(len(label) for _, label, _ in rows)
    print(f"{'measurement':<{width}}  {'value':>12}  target")
    print("-" * (width + 40))
    for key, label, fmt in rows:
        value = summary.get(key)
        shown = fmt.format(value) if value is not None else "skipped"
        print(f"{label:<{width}}  {shown:>12}  {verdict(key, value) if summary['device'] == 'cpu' else ''}")
    for name, why in summary.get("skipped", {}).items():
        print(f"{name}: skipped ({why})")
    for name, err in summary.get("failed", {}).items():
        print(f"{name}: FAILED ({err.splitlines()[0] if err else ''})")
    m = summary["machine"]
    where = f"{m['gpu']} ({m['gpu_memory_gb']:.0f} GiB), CUDA {m['cuda']}, " if "gpu" in m else ""
    print(f"\n{summary['device']}, {summary['dtype']}: {where}{m['cpus']} CPUs, torch {m['torch']} "
          f"({m['torch_threads']} threads), transformers {m['transformers']}"
          + (f", trl {m['trl']}" if "trl" in m else "") + (f", vllm {m['vllm']}" if "vllm" in m else "")
          + f"; load average {m['load_average_1min_start']:.2f} before the bench"
          + ("" if m["other_processes_cores"] is None else
             f"; other processes kept {m['other_processes_cores']:.2f} cores busy on average while it ran"))
    busy_elsewhere = m["other_processes_cores"]
    if (busy_elsewhere > 0.2) if busy_elsewhere is not None else m["load_average_1min_start"] > 0.5:
        print("warning: the machine was not idle: other processes shared the CPU, so the timings are pessimistic "
              "and noisy")
    if "ppo_episodes_per_s" in summary and "cache_samples_per_s" in summary:
        print(f"hours of a run here ≈ (episodes / {summary['ppo_episodes_per_s']:.3g} + (cache + eval samples) / "
              f"{summary['cache_samples_per_s']:.3g}) / 3600   (scripts/bench.py --estimate)")
    print(f"written: {out / 'summary.json'}")


def main(argv=None) -> int:
    global VOCAB
    args = parse_args(argv)
    VOCAB = args.vocab or VOCAB
    if args.estimate:
        return print_estimate(Path(args.out) / "summary.json", *args.estimate)
    try:
        check_device(args.device, args.dtype)
    except BenchSetupError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    if args.cache_child:
        build_cache_child(args.cache_child, args.cache_prompts, args.cache_m, args.cache_new_tokens, args.size,
                          args.device, args.dtype)
        return 0
    if args.vllm_child:
        vllm_child(args.size, args.dtype, args.reps)
        return 0

    from vbon_exp.modeling import quiet_transformers

    quiet_transformers()
    machine = machine_info(args.device)
    summary: dict = {"device": args.device, "dtype": args.dtype, "gpu": machine.get("gpu"), "machine": machine,
                     "settings": settings(args)}
    todo, skipped = stages(args)
    if skipped:
        summary["skipped"] = skipped
    for name, why in skipped.items():
        print(f"[bench] {name}: skipped ({why})", file=sys.stderr, flush=True)
    foreign = ForeignCpu()
    run_stages(todo, summary)
    summary["machine"]["load_average_1min_end"] = load_average()
    summary["machine"]["other_processes_cores"] = foreign.cores()
    if args.device == "cpu":
        summary["targets"] = {k: {"bound": f"{op} {b:g}", "value": summary.get(k), "met": target_met(k, summary.get(k))}
                              for k, (op, b) in TARGETS.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_table(summary, out)
    return 1 if summary.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
