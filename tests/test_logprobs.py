"""vbon_exp/logprobs.py: chunked log-probs, entropies and KLs equal the plain computation (values and gradients),
no chunk holds more than `chunk` positions' vocabulary, sequence_log_probs sums the masked token log-probs."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import shifted
from test_modeling import manual_log_dists, padded_pairs
from torch.utils._python_dispatch import TorchDispatchMode

from vbon_exp import kl
from vbon_exp.logprobs import response_token_stats, sequence_log_probs
from vbon_exp.modeling import Samples, response_logits, token_log_probs

VOCAB = 512  # wide enough that a vocabulary-sized tensor is the largest thing in the pass
HIDDEN = 16


@pytest.fixture(scope="module")
def wide_pair():
    """Two 2-layer GPT-2s (policy, other) with a 512-token vocabulary, and a padded batch of 6 responses of 7."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(shifted(3))
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=HIDDEN, n_layer=2, n_head=2, initializer_range=0.2)
    policy, other = GPT2LMHeadModel(config).eval(), GPT2LMHeadModel(config).eval()
    g = torch.Generator().manual_seed(shifted(4))
    prompt_ids = torch.randint(VOCAB, (6, 3), generator=g)
    response_ids = torch.randint(VOCAB, (6, 7), generator=g)
    prompt_mask = torch.ones(6, 3, dtype=torch.long)
    prompt_mask[0, 0] = prompt_mask[3, :2] = 0  # left padding
    response_mask = torch.ones(6, 7, dtype=torch.long)
    response_mask[1, 4:] = response_mask[4, 1:] = 0  # right padding
    return policy, other, Samples(torch.arange(6), prompt_ids, prompt_mask, response_ids, response_mask)


def plain_stats(policy, other, samples, temperature):
    """The yardstick: every position's full log-distribution at once (modeling.response_logits)."""
    mask = samples.response_mask
    logp_dist = response_logits(policy, samples, temperature)
    with torch.no_grad():
        other_dist = response_logits(other, samples, temperature)
    return {"logp": token_log_probs(logp_dist, samples), "other_logp": token_log_probs(other_dist, samples),
            "entropy": -(logp_dist.exp() * logp_dist).sum(-1) * mask,
            "kl": kl.full(logp_dist, other_dist) * mask}


@pytest.mark.parametrize("chunk", [1, 5, 16, 0])
def test_chunked_stats_equal_the_plain_computation(wide_pair, chunk):
    """Every statistic and the gradient of a loss built from them agree with the unchunked pass. Tolerance 1e-5
    absolute on values of magnitude ≤ ~10 (float32: the same rows in other matmul blockings differ by round-off,
    measured ≤ 1.5e-6 on values, ≤ 4e-6 on gradients); a misaligned position or a dropped mask would differ by
    > 0.1."""
    policy, other, samples = wide_pair
    model = copy.deepcopy(policy).requires_grad_(True)
    expected = plain_stats(model, other, samples, 0.8)
    loss = expected["logp"].sum() + expected["kl"].sum()
    want = torch.autograd.grad(loss, list(model.parameters()))
    got = response_token_stats(model, samples, 0.8, chunk=chunk, entropy=True, other=other, kl=True)
    for name in ("logp", "other_logp", "entropy", "kl"):
        value = getattr(got, name) * samples.response_mask  # (padding is zero in the plain stats too)
        assert torch.allclose(value, expected[name].detach(), atol=1e-5, rtol=0), (name, chunk)
    grads = torch.autograd.grad(got.logp.sum() + got.kl.sum(), list(model.parameters()))
    for g_got, g_want in zip(grads, want):
        assert torch.allclose(g_got, g_want, atol=1e-5, rtol=1e-4), (chunk, (g_got - g_want).abs().max())
    assert not got.other_logp.requires_grad and not got.entropy.requires_grad  # the other model is read, not trained


class LargestOutput(TorchDispatchMode):
    """Records the most elements of any tensor an op produces whose last dimension is the vocabulary, but the LM
    head's weight itself ([hidden, V] transposed: not an activation)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == VOCAB and tuple(t.shape) != (HIDDEN, VOCAB):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("grad", [False, True])
def test_no_op_produces_more_than_a_chunk_of_vocabulary(wide_pair, grad):
    """With chunk c, no tensor of more than c × V elements exists in the forward or the backward pass (the backward
    recomputes each chunk); unchunked, B × L × V does. Exact counts, no tolerance."""
    policy, other, samples = wide_pair
    model = copy.deepcopy(policy).requires_grad_(grad)
    b, length = samples.response_ids.shape
    for chunk, bound in ((4, 4 * VOCAB), (0, b * length * VOCAB)):
        with LargestOutput() as meter, torch.set_grad_enabled(grad):
            stats = response_token_stats(model, samples, 1.0, chunk=chunk, entropy=True, other=other, kl=True)
            if grad:
                (stats.logp.sum() + stats.kl.sum()).backward()
        if chunk:
            assert VOCAB <= meter.largest <= bound, (chunk, meter.largest)
        else:
            assert meter.largest == bound  # the plain computation's whole batch of distributions


def test_sequence_log_probs_sum_the_masked_token_log_probs(synthetic_task):
    """Σ_t log π(y_t | x, y_<t) over real response tokens only (padding holds a real id that must not count);
    float64, no gradients, independent of the batch size and the chunk. Tolerance 1e-4 (measured ≤ 3e-6: float32
    vs the float64 manual sum over ≤ 5 tokens)."""
    model = synthetic_task.reference
    samples, pairs = padded_pairs(synthetic_task)
    expected = torch.tensor([
        float(manual_log_dists(model, prompt, response, 0.7).gather(-1, torch.tensor(response)[:, None]).sum())
        for prompt, response in pairs
    ], dtype=torch.float64)
    trainable = copy.deepcopy(model).requires_grad_(True)  # sequence_log_probs must not build a graph anyway
    for batch_size, chunk in ((1, 1024), (3, 2), (64, 0)):
        got = sequence_log_probs(trainable, samples, 0.7, batch_size=batch_size, chunk=chunk)
        assert got.dtype == torch.float64 and got.shape == (4,) and not got.requires_grad
        assert torch.allclose(got, expected, atol=1e-4, rtol=0), (batch_size, got, expected)
    # precondition: the padding (rows 1–3; row 0 has none) would change the sums if it were counted
    all_tokens = response_logits(model, samples, 0.7).gather(-1, samples.response_ids[..., None]).squeeze(-1)
    assert (all_tokens.sum(-1).double() - expected)[1:].abs().min() > 1e-2
    empty = sequence_log_probs(model, samples.select(slice(0, 0)), 0.7)
    assert empty.shape == (0,) and empty.dtype == torch.float64
