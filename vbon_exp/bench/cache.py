"""Section 4: a reference cache (`build_reference_cache`, prompts × M, keep_texts = 0) on the `--size` model, built in
a subprocess: bytes on disk per cached reward (every file in the cache directory), the build's peak RSS (its own),
and `cache_samples_per_s` = cached rewards / build seconds (generation + scoring + writing)."""

from __future__ import annotations

import tempfile
import time

from vbon_exp.bench.rl import TableReward
from vbon_exp.bench.scale import (
    Scale,
    gpu_peak_gb,
    peak_rss_mb,
    random_gpt2,
    random_prompts,
    reset_gpu_peak,
    synchronize,
)
from vbon_exp.bench.timing import print_json, run_child
from vbon_exp.storage import LOCK_NAME


def build_cache_child(scale: Scale, directory: str, prompts: int, m: int, new_tokens: int, size: str = "tiny",
                      device: str = "cpu", dtype: str = "float32") -> None:
    """Runs in a subprocess: build one cache, print its numbers as JSON (peak RSS is this process's own)."""
    import torch

    from vbon_exp.meters import GENERATION, SCORING
    from vbon_exp.reference import build_reference_cache
    from vbon_exp.sampling import SamplingConfig, sample_responses

    model = random_gpt2(scale, size, device=device, dtype=dtype)
    prompt_ids = random_prompts(scale, prompts, 8, seed=3)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=new_tokens, batch_size=256)
    eos = scale.vocab - 1
    # one small draw first, untimed: the GPU's kernel selection and allocator warm-up are not the cache's cost
    sample_responses(model, prompt_ids[:2], 1, sampling, eos_id=eos, pad_id=eos,
                     generator=torch.Generator(device=device).manual_seed(0))
    reset_gpu_peak(device)
    generated, scored = GENERATION.snapshot(), SCORING.snapshot()
    synchronize(device)
    t0 = time.perf_counter()
    cache = build_reference_cache(
        reference=model, reward=TableReward(scale), tokenizer=None, prompts=prompt_ids, m=m, sampling=sampling,
        seed=0, cache_dir=directory, key_parts={"reference": f"bench-{size}", "reward": "bench-table",
                                                "prompts": "bench"},
        eos_id=eos, pad_id=eos, chunk_prompts=64, keep_texts=0,
    )
    synchronize(device)
    build_s = time.perf_counter() - t0
    files = [p for p in cache.path.iterdir() if p.is_file() and p.name != LOCK_NAME]  # the cache's own bytes
    size_bytes = sum(p.stat().st_size for p in files)
    n_rewards = int(cache.lengths.sum())
    print_json({
        "bytes_per_cached_reward": size_bytes / n_rewards, "cache_bytes": size_bytes, "cache_files": len(files),
        "cache_rewards": n_rewards, "cache_build_s": build_s, "cache_samples_per_s": n_rewards / build_s,
        "cache_gen_tok_s": GENERATION.since(generated)["rate"], "cache_score_samples_s": SCORING.since(scored)["rate"],
        "peak_rss_mb": peak_rss_mb(), "cache_build_torch_threads": torch.get_num_threads(),
        **{f"cache_{k}": v for k, v in gpu_peak_gb(device).items()},
    })


def bench_cache(child_args: list[str], prompts: int, m: int, new_tokens: int, size: str = "tiny",
                device: str = "cpu", dtype: str = "float32") -> dict:
    """`child_args`: the options every child repeats (the scale)."""
    with tempfile.TemporaryDirectory() as tmp:
        return run_child([*child_args, "--cache-child", tmp, "--cache-prompts", str(prompts), "--cache-m", str(m),
                          "--cache-new-tokens", str(new_tokens), "--size", size, "--device", device,
                          "--dtype", dtype], "cache build")
