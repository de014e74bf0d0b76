"""Batched autoregressive sampling with a KV cache and exact inverse-CDF token draws.

Used by the reference cache, BoN sampling, evaluation and training rollouts, so all of them sample the same
distribution: softmax(logits / temperature), restricted by top-k and top-p when those are set.

Where the time goes, and what this module does about it (batch 64, vocabulary 50,257, CPU):
- one forward pass per token with a KV cache; the prompt pass asks the model for the last position's logits only
  (`logits_to_keep=1`), so the LM head runs once per row per step, never over the whole prompt;
- the draw: torch.multinomial over 64 × 50,257 probabilities costs ~60 ms a step (more than the forward pass of a
  small model). Here one fused softmax pass gives the token weights, and a two-level inverse CDF (block sums, then
  a cumulative sum inside the one block the uniform falls in) draws a token from them in ~1–2 ms (see
  `inverse_cdf_sample` for why it is exact up to a bounded float rounding);
- rows that have emitted EOS are dropped from the batch and the KV cache once they are a quarter of the rows still
  decoding (the copy of the cache then pays for itself within a few steps);
- prompts are bucketed by length (`sample_responses`), left-padded with correct position ids;
- everything runs under torch.inference_mode.

`SamplingConfig.backend` selects the sampler: `native` (this module) or `vllm` (vbon_exp/vllm_backend.py, GPU only,
import-guarded: `check_backend` fails before any sampling, naming the package, when vLLM is not installed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from vbon_exp.errors import SamplerBackendError
from vbon_exp.meters import GENERATION
from vbon_exp.modeling import Samples, decode_step, positions_from_mask
from vbon_exp.progress import progress
from vbon_exp.settings.sampling import SamplingConfig  # noqa: F401  (its settings; re-exported)


# --------------------------------------------------------------------------- the sampler registry


@dataclass(frozen=True)
class SamplerBackend:
    """A way to draw responses with the `sample_responses` contract, and a check that it can run here."""

    sample: Callable  # (model, prompts, n_per_prompt, cfg, *, eos_id, pad_id, generator, prompt_index, desc) -> Samples
    require: Callable[[], None] = lambda: None  # raises SamplerBackendError, naming what is missing


# Sampler backends by name: `native` is this module's; vbon_exp.vllm_backend registers `vllm` when imported (the
# backend sits above this module, so nothing here imports it).
SAMPLERS: dict[str, SamplerBackend] = {}


def register_sampler(name: str, backend: SamplerBackend) -> None:
    SAMPLERS[name] = backend


def check_backend(backend: str) -> None:
    """Fail at once, naming the missing package, when `backend` cannot run here (called before any sampling)."""
    if backend not in SAMPLERS:
        raise SamplerBackendError(f"sampler backend must be one of {sorted(SAMPLERS)}, got {backend!r}")
    SAMPLERS[backend].require()


# --------------------------------------------------------------------------- logit filters


def _top_p_drop(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean [B, V]: tokens outside the nucleus (the mass above a token already reaches top_p).

    The nucleus is nearly always among the few hundred most likely tokens, so it is first looked for in a top-k
    candidate set (a partial sort of the probabilities); only when some row's candidates hold less than top_p of
    the mass is the whole vocabulary sorted. Both compute the same prefix sums of the sorted probabilities."""
    vocab = logits.shape[-1]
    probs = torch.softmax(logits, dim=-1)
    k = min(vocab, 1024)
    if k < vocab:
        values, order = torch.topk(probs, k, dim=-1)
        mass_before = torch.cumsum(values, dim=-1) - values
        if bool((mass_before[:, -1] + values[:, -1] >= top_p).all()):
            keep_sorted = mass_before < top_p  # keep a token while the mass above it is still short of top_p
            return ~torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, keep_sorted)
    values, order = torch.sort(probs, dim=-1, descending=True)
    mass_before = torch.cumsum(values, dim=-1) - values
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_before >= top_p)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / top-p nucleus to −inf (the most likely token always survives)."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = logits.masked_fill(_top_p_drop(logits, top_p), float("-inf"))
    return logits


# --------------------------------------------------------------------------- the draw

BLOCK = 256  # tokens per block of the two-level inverse CDF


def inverse_cdf_sample(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from non-negative, unnormalised weights [B, V]: token i with probability w_i / Σ_j w_j.

    Two-level inverse CDF, one uniform u per row: the vocabulary is cut into blocks of BLOCK tokens; a float64
    cumulative sum over the block sums picks the block b holding u·total, and a float64 cumulative sum over that
    block's BLOCK weights picks the token, with the uniform's position inside the block rescaled to the block's own
    float64 total. Only B × (V/BLOCK + BLOCK) numbers are ever cumulated, instead of B × V.

    Exactness. A token is drawn with probability P(b)·P(i | b) where P(b) = s_b / Σ_c s_c and P(i | b) = w_i /
    Σ_{j∈b} w_j. The inner factor is computed in float64 from the float32 weights themselves (relative error
    ≤ BLOCK·2⁻⁵³ ≈ 3e-14). The block sums s_b are float32 reductions of BLOCK positive terms: relative error
    ≤ (BLOCK − 1)·2⁻²⁴ ≈ 1.5e-5 each in the worst case (the recursive-summation bound; torch's vectorised
    reduction is far tighter in practice), cumulated in float64. So every token's probability is within a factor
    1 ± 3.1e-5 of w_i / Σ w (worst case), whatever the vocabulary size. (A single float32 cumulative sum over
    50,257 tokens only guarantees ≈ 3e-3; float64 over the whole row is exact enough but several times slower.)
    A chi-square test needs ≈ 10/δ² draws to see a relative error δ: over 10¹⁰ draws for δ = 3e-5, against 10⁴
    per test here. The weights themselves carry the float32 rounding of softmax, which any sampler of a float32
    model has. Zero-weight tokens (filtered by top-k/top-p) are never drawn: the targets are kept strictly below
    each level's total, so the chosen block and token always have a non-empty interval.
    """
    b_rows, vocab = weights.shape
    w = weights if weights.dtype in (torch.float32, torch.float64) else weights.float()
    w = w.contiguous()
    block = min(BLOCK, vocab)
    n_full = vocab // block
    v0 = n_full * block
    sums = w[:, :v0].view(b_rows, n_full, block).sum(-1)
    if v0 < vocab:
        sums = torch.cat([sums, w[:, v0:].sum(-1, keepdim=True)], dim=1)
    sums = sums.double()
    n_blocks = sums.shape[1]
    cdf = torch.cumsum(sums, dim=-1)
    total = cdf[:, -1:]
    zero = torch.zeros_like(total)
    u = torch.rand((b_rows, 1), generator=generator, device=w.device, dtype=torch.float64)
    target = torch.minimum(u * total, torch.nextafter(total, zero))  # < total: never past the last real token
    blk = torch.searchsorted(cdf, target, right=True).clamp_(max=n_blocks - 1)  # cdf[b-1] ≤ target < cdf[b]
    below = torch.where(blk > 0, cdf.gather(1, (blk - 1).clamp(min=0)), zero)
    frac = (target - below) / sums.gather(1, blk)  # position inside the block, in [0, 1]
    cols = blk * block + torch.arange(block, device=w.device)
    inner = w.gather(1, cols.clamp(max=vocab - 1)).double().masked_fill_(cols >= vocab, 0.0)
    inner_cdf = torch.cumsum(inner, dim=-1)
    inner_total = inner_cdf[:, -1:]
    inner_target = torch.minimum(frac * inner_total, torch.nextafter(inner_total, zero))
    j = torch.searchsorted(inner_cdf, inner_target, right=True).clamp_(max=block - 1)
    return (cols.gather(1, j)).squeeze(-1).clamp_(max=vocab - 1)


def sample_logits(logits: torch.Tensor, temperature: float, generator, *, inplace: bool = False) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) [B, V] (−inf logits are never drawn).

    The weights come from one fused softmax pass (max, exp and sum in one kernel, faster than separate exp passes;
    the normalisation is not needed by the inverse CDF but costs nothing there). Its float32 weights carry the
    usual float32 rounding (relative ≲ 1e-5 even 50 nats below the most likely token, mostly the rounding of the
    scaled logit itself). With `inplace` (the decoding loop, which owns its logits) the temperature scaling
    overwrites the logits instead of allocating a copy."""
    x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    if temperature != 1.0:
        x = x.mul_(1.0 / temperature) if inplace and x is logits else x * (1.0 / temperature)
    return inverse_cdf_sample(torch.softmax(x, dim=-1), generator)


def sample_next_token(logits: torch.Tensor, cfg: SamplingConfig, generator, *, inplace: bool = False) -> torch.Tensor:
    """One token per row from the filtered, temperature-scaled distribution of `logits` [B, V]; `inplace` lets
    the draw overwrite `logits`."""
    if (0 < cfg.top_k < logits.shape[-1]) or cfg.top_p < 1.0:
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        return sample_logits(filter_logits(x / cfg.temperature, cfg.top_k, cfg.top_p), 1.0, generator,
                             inplace=True)
    return sample_logits(logits, cfg.temperature, generator, inplace=inplace)


# --------------------------------------------------------------------------- batched generation


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


_KEEP_KWARG: dict[type, str | None] = {}


def _select_cache_rows(cache, idx: torch.Tensor):
    """The KV cache restricted to rows `idx`, or None when this cache type cannot be cut (then nothing is dropped)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(idx)
        return cache
    if isinstance(cache, tuple) and all(isinstance(layer, tuple) for layer in cache):
        return tuple(tuple(t.index_select(0, idx) for t in layer) for layer in cache)
    return None


# Drop finished rows from the batch once they make up this fraction of the rows still being decoded.
COMPACT_FRACTION = 0.25


@torch.inference_mode()
def generate_batch(
    model, prompts: list[list[int]], cfg: SamplingConfig, *, eos_id: int | None, pad_id: int, generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one response per prompt. Returns (prompt_ids, prompt_mask, response_ids, response_mask).

    Rows that emitted EOS get padding (mask 0) afterwards; once they are COMPACT_FRACTION of the rows still
    decoding they leave the batch and the KV cache, so no forward pass is spent on them."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)
    batch, lp = prompt_ids.shape
    steps = cfg.max_new_tokens
    out_ids = torch.full((batch, steps), pad_id, dtype=torch.long, device=device)
    out_mask = torch.zeros((batch, steps), dtype=torch.long, device=device)
    attn = torch.cat([prompt_mask, torch.ones((batch, steps), dtype=prompt_mask.dtype, device=device)], dim=1)
    positions = positions_from_mask(prompt_mask)
    step_ids, step_pos = prompt_ids, positions
    next_pos = positions[:, -1:] + 1
    rows = torch.arange(batch, device=device)  # original row of each row still in the batch
    finished = torch.zeros(batch, dtype=torch.bool, device=device)  # among the rows still in the batch
    cache, done_steps = None, 0
    for t in range(steps):
        logits, cache = decode_step(model, step_ids, attn[:, : lp + t], step_pos, cache)
        tok = sample_next_token(logits, cfg, generator, inplace=True)  # the logits are this loop's own
        done_steps = t + 1
        live = ~finished
        out_ids[rows[live], t] = tok[live]
        out_mask[rows[live], t] = 1
        if eos_id is not None:
            finished = finished | (tok == eos_id)
            n_finished = int(finished.sum())
            if n_finished == finished.shape[0]:
                break
            if n_finished >= COMPACT_FRACTION * finished.shape[0] and t + 1 < steps:
                keep = (~finished).nonzero().squeeze(1)
                cut = _select_cache_rows(cache, keep)
                if cut is not None:
                    cache, rows, attn = cut, rows[keep], attn[keep]
                    tok, next_pos, finished = tok[keep], next_pos[keep], finished[keep]
            tok = tok.masked_fill(finished, pad_id)
        step_ids, step_pos = tok[:, None], next_pos
        next_pos = next_pos + 1
    return prompt_ids, prompt_mask, out_ids[:, :done_steps], out_mask[:, :done_steps]


def sample_responses(
    model,
    prompts: list[list[int]],
    n_per_prompt: int,
    cfg: SamplingConfig,
    *,
    eos_id: int | None,
    pad_id: int,
    generator: torch.Generator | None,
    prompt_index: list[int] | None = None,
    desc: str | None = None,
) -> Samples:
    """Draw `n_per_prompt` responses for every prompt; rows come back grouped by prompt, in prompt order.

    Prompts are bucketed by length (sorted) so a batch holds prompts of similar length and little padding;
    batching never changes the distribution, only which rows share a forward pass."""
    t0 = time.perf_counter()
    check_backend(cfg.backend)
    samples = SAMPLERS[cfg.backend].sample(model, prompts, n_per_prompt, cfg, eos_id=eos_id, pad_id=pad_id,
                                           generator=generator, prompt_index=prompt_index, desc=desc)
    GENERATION.add(int(samples.response_mask.sum()), time.perf_counter() - t0)
    return samples


def _sample_native(model, prompts, n_per_prompt, cfg, *, eos_id, pad_id, generator, prompt_index, desc) -> Samples:
    index = list(range(len(prompts))) if prompt_index is None else list(prompt_index)
    rows = [i for i in range(len(prompts)) for _ in range(n_per_prompt)]  # row -> prompt
    order = sorted(range(len(rows)), key=lambda j: len(prompts[rows[j]]))
    parts, placed = [], []
    bar = progress(total=len(rows), desc=desc or "sampling", unit="seq", leave=False, disable=desc is None)
    for start in range(0, len(order), cfg.batch_size):
        chunk = order[start : start + cfg.batch_size]
        batch_prompts = [prompts[rows[j]] for j in chunk]
        p_ids, p_mask, r_ids, r_mask = generate_batch(
            model, batch_prompts, cfg, eos_id=eos_id, pad_id=pad_id, generator=generator
        )
        pidx = torch.tensor([index[rows[j]] for j in chunk], dtype=torch.long, device=p_ids.device)
        parts.append(Samples(pidx, p_ids, p_mask, r_ids, r_mask))
        placed.extend(chunk)
        bar.update(len(chunk))
    bar.close()
    samples = Samples.cat(parts, pad_id)
    # restore prompt order (rows were bucketed by length)
    inverse = torch.empty(len(placed), dtype=torch.long)
    inverse[torch.tensor(placed, dtype=torch.long)] = torch.arange(len(placed))
    return samples.select(inverse.to(samples.prompt_index.device))


register_sampler("native", SamplerBackend(_sample_native))
