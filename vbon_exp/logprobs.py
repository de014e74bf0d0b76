"""Per-token log-probabilities of responses, the entropy and the full-vocabulary KL, computed in chunks of positions.

A batch of B responses of L tokens over a vocabulary of V holds B × L × V log-probabilities: 1.6 GB in float32 for
64 × 48 tokens at GPT-2's 50,257, 6.3 GB at Llama's 128,256 — for each model whose log-probabilities are compared.
Here the models run their transformer body once ([B, L, H] hidden states, H ≪ V), and the LM head, the softmax and
what is read off it (the sampled token's log-probability, the entropy, the KL to another model) run `chunk`
positions at a time (`train.logits_chunk`), so at most chunk × V floats are held; with gradients, each chunk is
recomputed in the backward pass (torch.utils.checkpoint) instead of kept. One chunk holding every position is the
plain computation. Every trainer, the evaluator and the oracle read log-probabilities through here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from vbon_exp import kl
from vbon_exp.modeling import Samples, backbone_and_head, positions_from_mask

# Positions (summed over the batch) whose log-distributions are held at once: 1024 × 50,257 float32 = 0.2 GB.
LOGITS_CHUNK = 1024


@dataclass
class TokenStats:
    """Per response position [B, L]: log π(y_t) of the sampled token (zero on padding), and where asked the entropy
    of π(·), the other model's log π_other(y_t) and KL(π(·) ‖ π_other(·)) over the vocabulary, and the last hidden
    state [B, L, H]."""

    logp: torch.Tensor
    entropy: torch.Tensor | None = None
    other_logp: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


def response_hidden(model, samples: Samples) -> tuple[torch.Tensor, Callable]:
    """(the last hidden state at the positions that predict the response tokens [B, L, H], the LM head as a
    function hidden -> logits). The logits that predict response token t sit at input position Lp − 1 + t."""
    body, head = backbone_and_head(model)
    ids = torch.cat([samples.prompt_ids, samples.response_ids], dim=1)
    mask = torch.cat([samples.prompt_mask, samples.response_mask], dim=1)
    out = body(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False)
    lp, lr = samples.prompt_ids.shape[1], samples.response_ids.shape[1]
    return out.last_hidden_state[:, lp - 1: lp - 1 + lr], head


def log_distribution(head: Callable, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) over the vocabulary, in float32 (float64 models stay float64)."""
    logits = head(hidden)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return torch.log_softmax(logits / temperature, dim=-1)


def response_token_stats(model, samples: Samples, temperature: float, *, chunk: int = LOGITS_CHUNK,
                         entropy: bool = False, other=None, kl: bool = False, hidden: bool = False) -> TokenStats:
    """The TokenStats of `model`'s responses at `temperature`, `chunk` positions at a time (module docstring).
    `other`: another model (e.g. π_ref), read without gradients: its token log-probabilities, and with `kl` the
    full-vocabulary KL(model ‖ other) at each position (with gradients through `model`)."""
    states, head = response_hidden(model, samples)
    other_states = None
    if other is not None:
        with torch.no_grad():
            other_states = response_hidden(other, samples)
    b, length = samples.response_ids.shape
    flat = states.reshape(b * length, -1)
    ids = samples.response_ids.reshape(-1)
    size = chunk if chunk and chunk > 0 else b * length
    pieces = []
    step = _chunk_fn(head, other_states[1] if other_states else None, temperature, entropy, kl)
    for start in range(0, b * length, size):
        rows = slice(start, start + size)
        inputs = [flat[rows], ids[rows], *([other_states[0].reshape(b * length, -1)[rows]] if other_states else [])]
        use_checkpoint = torch.is_grad_enabled() and flat.requires_grad and size < b * length
        pieces.append(checkpoint(step, *inputs, use_reentrant=False) if use_checkpoint else step(*inputs))
    mask = samples.response_mask
    logp, ent, other_logp, div = (torch.cat(parts).view(b, length) * mask if parts[0] is not None else None
                                  for parts in zip(*pieces))
    return TokenStats(logp=logp, entropy=ent, other_logp=other_logp, kl=div, hidden=states if hidden else None)


def _chunk_fn(head, other_head, temperature: float, with_entropy: bool, with_kl: bool):
    """The per-chunk computation: (hidden, ids[, other hidden]) -> (logp, entropy, other logp, KL; None where not
    asked)."""

    def step(h, ids, h_other=None):
        log_dist = log_distribution(head, h, temperature)
        logp = log_dist.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        ent = other_logp = div = None
        if with_entropy:
            with torch.no_grad():
                ent = -(log_dist.exp() * log_dist).sum(-1)
        if h_other is not None:
            with torch.no_grad():
                log_other = log_distribution(other_head, h_other, temperature)
                other_logp = log_other.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            div = kl.full(log_dist, log_other) if with_kl else None
        return logp, ent, other_logp, div

    return step


def response_log_probs(model, samples: Samples, temperature: float, chunk: int = LOGITS_CHUNK) -> torch.Tensor:
    """log π(y_t | x, y_<t) of the sampled tokens, zero on padding: [B, L]."""
    return response_token_stats(model, samples, temperature, chunk=chunk).logp


@torch.no_grad()
def sequence_log_probs(model, samples: Samples, temperature: float, batch_size: int = 64,
                       chunk: int = LOGITS_CHUNK) -> torch.Tensor:
    """log π(y|x) summed over response tokens, in batches, without gradients: [B] float64."""
    out = []
    for start in range(0, len(samples), batch_size):
        part = samples.select(slice(start, start + batch_size))
        out.append(response_log_probs(model, part, temperature, chunk).sum(-1).double())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
