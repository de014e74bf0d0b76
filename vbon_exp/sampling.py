"""Batched autoregressive sampling with a KV cache and exact inverse-CDF token draws.

Used by the reference cache, BoN sampling, evaluation and training rollouts, so all of them sample the same
distribution: softmax(logits / temperature), restricted by top-k and top-p when those are set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from vbon_exp.modeling import Samples, decode_step, positions_from_mask


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # softmax temperature, > 0
    top_k: int = 0  # keep the k most likely tokens; 0 = all
    top_p: float = 1.0  # nucleus: smallest set of tokens with mass ≥ top_p; 1 = all
    max_new_tokens: int = 48  # response length cap (tokens)
    batch_size: int = 256  # sequences decoded together


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / top-p nucleus to −inf (the most likely token always survives)."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= top_p  # keep a token while the mass above it is still short of top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def inverse_cdf_sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from unnormalised probabilities [B, V]: first index whose cumulative mass exceeds u·total.

    Exact (no sampling bias beyond float rounding): a zero-probability token occupies an empty interval and is
    never drawn. Much faster than torch.multinomial over large vocabularies. float64 cumsum keeps rounding
    below 1e-12 even for 50k-token vocabularies."""
    cdf = torch.cumsum(probs.double(), dim=-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=torch.float64)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def sample_next_token(logits: torch.Tensor, cfg: SamplingConfig, generator) -> torch.Tensor:
    logits = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p)
    probs = torch.softmax(logits, dim=-1)
    return inverse_cdf_sample(probs, generator)


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def generate_batch(
    model, prompts: list[list[int]], cfg: SamplingConfig, *, eos_id: int | None, pad_id: int, generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one response per prompt. Returns (prompt_ids, prompt_mask, response_ids, response_mask)."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)
    batch = prompt_ids.shape[0]
    attn = prompt_mask
    positions = positions_from_mask(prompt_mask)
    step_ids, step_pos = prompt_ids, positions
    next_pos = positions[:, -1:] + 1
    cache = None
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, alive = [], []
    for _ in range(cfg.max_new_tokens):
        logits, cache = decode_step(model, step_ids, attn, step_pos, cache)
        tok = sample_next_token(logits, cfg, generator)
        tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        alive.append(~finished)
        tokens.append(tok)
        if eos_id is not None:
            finished = finished | (tok == eos_id)
            if bool(finished.all()):
                break
        attn = torch.cat([attn, torch.ones((batch, 1), dtype=attn.dtype, device=device)], dim=1)
        step_ids, step_pos = tok[:, None], next_pos
        next_pos = next_pos + 1
    response_ids = torch.stack(tokens, dim=1)
    response_mask = torch.stack(alive, dim=1).long()
    return prompt_ids, prompt_mask, response_ids, response_mask


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
    index = list(range(len(prompts))) if prompt_index is None else list(prompt_index)
    rows = [i for i in range(len(prompts)) for _ in range(n_per_prompt)]  # row -> prompt
    order = sorted(range(len(rows)), key=lambda j: len(prompts[rows[j]]))
    parts, placed = [], []
    bar = tqdm(total=len(rows), desc=desc or "sampling", unit="seq", leave=False, disable=desc is None)
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
