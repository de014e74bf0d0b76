"""Section 1: our sampler (`vbon_exp.sampling.sample_responses`) against transformers' `model.generate(do_sample=True)`
with the same distribution (top-k and top-p off, no EOS: both sides generate every token), batch × new tokens at the
scale's temperature, on the tiny and the GPT-2-small-sized model. Same process, same torch threads, alternating ours
and generate after one warm-up call each; every timed call is kept (min and median)."""

from __future__ import annotations

from vbon_exp.bench.scale import Scale, random_gpt2, random_prompts, synchronize
from vbon_exp.bench.timing import spread


def our_sampler(scale: Scale, model, device: str):
    """fn(rep) → tokens drawn by one call of our sampler on the scale's batch of prompts."""
    import torch

    from vbon_exp.sampling import SamplingConfig, sample_responses

    prompts = random_prompts(scale, scale.batch, scale.prompt_len, seed=1)
    cfg = SamplingConfig(temperature=scale.temperature, max_new_tokens=scale.new_tokens, batch_size=scale.batch)

    def call(rep: int) -> int:
        s = sample_responses(model, prompts, 1, cfg, eos_id=None, pad_id=0,
                             generator=torch.Generator(device=device).manual_seed(rep + 1))
        tokens = int(s.response_mask.sum())
        assert tokens == scale.tokens, f"ours did not generate {scale.batch}×{scale.new_tokens} tokens"
        return tokens

    return call


def transformers_generate(scale: Scale, model, device: str):
    """fn(rep) → tokens drawn by one `model.generate` call with the same distribution as our sampler."""
    import torch
    from transformers import GenerationConfig

    ids = torch.tensor(random_prompts(scale, scale.batch, scale.prompt_len, seed=1), device=device)
    mask = torch.ones_like(ids)
    cfg = GenerationConfig(do_sample=True, temperature=scale.temperature, top_k=0, top_p=1.0,
                           max_new_tokens=scale.new_tokens, min_new_tokens=scale.new_tokens, eos_token_id=None,
                           pad_token_id=0, bos_token_id=None)
    model.generation_config.eos_token_id = None  # no EOS anywhere: both sides generate every token
    model.generation_config.pad_token_id = 0

    def call(rep: int) -> int:
        torch.manual_seed(rep + 1)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
        tokens = int((out.shape[1] - ids.shape[1]) * out.shape[0])
        assert tokens == scale.tokens, f"generate did not generate {scale.batch}×{scale.new_tokens} tokens"
        return tokens

    return call


def time_calls(sides: dict, reps: int, device: str) -> dict[str, list[float]]:
    """Each side's `reps` timed calls, alternating sides call by call, after one warm-up call each."""
    import time

    for call in sides.values():
        call(-1)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for rep in range(reps):
        for name, call in sides.items():
            synchronize(device)
            t0 = time.perf_counter()
            call(rep)
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def bench_sampler(scale: Scale, size: str, reps: int, device: str = "cpu", dtype: str = "float32") -> dict:
    model = random_gpt2(scale, size, device=device, dtype=dtype)
    times = time_calls({"ours": our_sampler(scale, model, device),
                        "generate": transformers_generate(scale, model, device)}, reps, device)
    ours, theirs = spread(times["ours"]), spread(times["generate"])
    return {
        f"sampler_tok_s_{size}": scale.tokens / ours["median"],
        f"sampler_tok_s_{size}_best": scale.tokens / ours["min"],
        f"generate_tok_s_{size}": scale.tokens / theirs["median"],
        f"generate_tok_s_{size}_best": scale.tokens / theirs["min"],
        f"sampler_speedup_{size}": theirs["median"] / ours["median"],
        f"sampler_speedup_{size}_best": theirs["min"] / ours["min"],
        f"sampler_times_s_{size}": times["ours"],
        f"generate_times_s_{size}": times["generate"],
    }
