"""vbon_exp/sampling.py: logit filters, the inverse-CDF draw, and batched generation with padding and EOS.

Statistical tests are chi-square goodness-of-fit tests on fixed-seed torch.Generators: each p-value is a
deterministic number, and the bar p > 1e-3 would reject a correct sampler for only 1 in 1000 seeds. Each also
checks the power side (a slightly wrong distribution is rejected), so it can fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from stats_helpers import binned_chisquare

from vbon_exp.modeling import Samples, load_causal_lm, response_logits, token_log_probs
from vbon_exp.sampling import (
    SamplingConfig,
    filter_logits,
    inverse_cdf_sample,
    left_pad,
    sample_next_token,
    sample_responses,
)

VOCAB, EOS, PAD = 10, 9, 0  # PAD is a real token id on purpose: padding must be tracked by masks alone
PROMPTS = [[1, 2, 3, 4, 5], [6], [3, 1, 4], [2, 7]]  # different lengths: bucketing and left padding


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 1-layer GPT-2 with an EOS token, saved with save_pretrained and loaded the way tasks load models."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2, eos_token_id=EOS, bos_token_id=EOS,
        initializer_range=0.3,
    )
    path = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(path)
    return load_causal_lm(str(path), torch.device("cpu")).eval()


# --------------------------------------------------------------------------- filters


def test_filter_logits_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, -2.0, 4.0], [0.0, -1.0, 2.0, 1.0, -3.0]])
    out = filter_logits(logits, top_k=2, top_p=1.0)
    kept = torch.isfinite(out)
    assert kept.tolist() == [[False, True, False, False, True], [False, False, True, True, False]]
    assert torch.equal(out[kept], logits[kept])  # survivors are unchanged


def test_filter_logits_no_filter_is_identity():
    logits = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(filter_logits(logits, 0, 1.0), logits)
    assert torch.equal(filter_logits(logits, 7, 1.0), logits)  # k ≥ vocabulary: nothing to drop


def test_filter_logits_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    # sorted: 0.5, 0.3, 0.15, 0.05 → cumulative 0.5, 0.8, 0.95, 1.0
    assert torch.isfinite(filter_logits(logits, 0, 0.5)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.6)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.8)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.9)).tolist() == [[False, True, True, True]]
    assert torch.isfinite(filter_logits(logits, 0, 0.99)).tolist() == [[True, True, True, True]]
    # the most likely token always survives, however small top_p is
    assert torch.isfinite(filter_logits(logits, 0, 1e-6)).tolist() == [[False, True, False, False]]


def test_filter_logits_top_k_then_top_p():
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    # top-3 renormalised: 4/9, 3/9, 2/9; top_p=0.7 keeps 4/9 + 3/9 = 0.78 ≥ 0.7
    assert torch.isfinite(filter_logits(logits, 3, 0.7)).tolist() == [[True, True, False, False]]


# --------------------------------------------------------------------------- inverse-CDF draws


def test_inverse_cdf_sample_matches_probabilities_and_never_draws_zero_mass():
    # unnormalised, zeros at the first, a middle and the last position
    weights = torch.tensor([0.0, 2.0, 0.0, 1.0, 3.0, 0.5, 0.0, 1.5, 0.0])
    n = 40000
    draws = inverse_cdf_sample(weights.expand(n, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=len(weights))
    assert counts[weights == 0].sum().item() == 0
    p = weights / weights.sum()
    support = weights > 0
    res = stats.chisquare(counts[support].numpy(), (p[support] * n).numpy())
    assert res.pvalue > 1e-3, res
    # power: a slightly different distribution is rejected
    q = p.clone()
    q[1], q[4] = q[1] + 0.02, q[4] - 0.02
    assert stats.chisquare(counts[support].numpy(), (q[support] * n).numpy()).pvalue < 1e-6


def test_inverse_cdf_sample_single_token_and_deterministic_with_seed():
    probs = torch.tensor([[0.0, 0.0, 1.0, 0.0]]).expand(1000, -1)
    assert (inverse_cdf_sample(probs, torch.Generator().manual_seed(1)) == 2).all()
    w = torch.rand(50, 8, generator=torch.Generator().manual_seed(2))
    a = inverse_cdf_sample(w, torch.Generator().manual_seed(3))
    b = inverse_cdf_sample(w, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "cfg",
    [
        SamplingConfig(temperature=1.0, top_k=3),
        SamplingConfig(temperature=0.5, top_k=3),
        SamplingConfig(temperature=1.0, top_p=0.8),
        SamplingConfig(temperature=2.0),
    ],
    ids=["top3", "top3-T0.5", "top_p0.8", "T2"],
)
def test_sample_next_token_matches_filtered_softmax(cfg):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
    scaled = (logits / cfg.temperature).double()
    probs = torch.softmax(scaled, -1)
    if cfg.top_k:
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[torch.argsort(scaled, descending=True)[: cfg.top_k]] = True
    elif cfg.top_p < 1:
        # hand-computed nucleus: probabilities in descending order until the mass reaches top_p
        order = torch.argsort(probs, descending=True)
        keep = torch.zeros_like(probs, dtype=torch.bool)
        mass = 0.0
        for j in order.tolist():
            keep[j] = True
            mass += float(probs[j])
            if mass >= cfg.top_p:
                break
    else:
        keep = torch.ones_like(probs, dtype=torch.bool)
    target = torch.where(keep, probs, torch.zeros_like(probs))
    target = target / target.sum()
    n = 30000
    draws = sample_next_token(logits.expand(n, -1), cfg, torch.Generator().manual_seed(4))
    counts = torch.bincount(draws, minlength=len(logits))
    assert counts[~keep].sum().item() == 0
    res = stats.chisquare(counts[keep].numpy(), (target[keep] * n).numpy())
    assert res.pvalue > 1e-3, (res, counts, target)
    # power: the unfiltered softmax at temperature 1 is rejected (every config here differs from it)
    base = torch.softmax(logits.double(), -1)
    assert stats.chisquare(counts.numpy() + 0.0, (base * n).numpy()).pvalue < 1e-6


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


# --------------------------------------------------------------------------- batched generation


def _strip_prompt(samples: Samples, j: int) -> list[int]:
    return samples.prompt_ids[j][samples.prompt_mask[j].bool()].tolist()


def test_sample_responses_groups_rows_by_prompt_in_prompt_order(tiny_lm):
    n = 5
    cfg = SamplingConfig(max_new_tokens=6, batch_size=3)  # batches straddle prompts of different lengths
    s = sample_responses(tiny_lm, PROMPTS, n, cfg, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(0))
    assert len(s) == n * len(PROMPTS)
    assert s.prompt_index.tolist() == [i for i in range(len(PROMPTS)) for _ in range(n)]
    for j in range(len(s)):
        assert _strip_prompt(s, j) == PROMPTS[j // n]
        # left padding: the real prompt tokens are the last ones
        assert s.prompt_mask[j, -1] == 1
    # a custom prompt_index labels rows with the caller's ids, same grouping
    s2 = sample_responses(
        tiny_lm, PROMPTS, 2, cfg, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(0),
        prompt_index=[10, 11, 12, 13],
    )
    assert s2.prompt_index.tolist() == [10, 10, 11, 11, 12, 12, 13, 13]
    assert [_strip_prompt(s2, j) for j in range(8)] == [p for p in PROMPTS for _ in range(2)]


def test_sample_responses_is_deterministic_given_the_seed(tiny_lm):
    cfg = SamplingConfig(max_new_tokens=6, batch_size=7)
    a = sample_responses(tiny_lm, PROMPTS, 4, cfg, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(9))
    b = sample_responses(tiny_lm, PROMPTS, 4, cfg, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.response_mask, b.response_mask)


def test_response_mask_stops_after_eos(tiny_lm):
    cfg = SamplingConfig(max_new_tokens=8, batch_size=64)
    s = sample_responses(tiny_lm, PROMPTS, 50, cfg, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(1))
    finished = 0
    for j in range(len(s)):
        ids, mask = s.response_ids[j].tolist(), s.response_mask[j].tolist()
        if EOS in ids:
            first = ids.index(EOS)
            finished += 1
            assert mask == [1] * (first + 1) + [0] * (len(ids) - first - 1)  # 1 up to and including EOS
            assert ids[first + 1 :] == [PAD] * (len(ids) - first - 1)  # nothing generated after EOS
        else:
            assert mask == [1] * len(ids) and len(ids) == cfg.max_new_tokens  # ran to the length cap
    assert 0 < finished < len(s)  # both cases occur (precondition for this test to mean anything)
    assert torch.equal(s.response_lengths, s.response_mask.sum(-1))


def test_without_eos_every_response_has_full_length(tiny_lm):
    cfg = SamplingConfig(max_new_tokens=4)
    s = sample_responses(tiny_lm, PROMPTS, 3, cfg, eos_id=None, pad_id=PAD, generator=torch.Generator().manual_seed(2))
    assert s.response_ids.shape == (12, 4) and bool(s.response_mask.all())


def _exact_two_token_distribution(model, prompt: list[int], temperature: float) -> torch.Tensor:
    """Exact probabilities of every response with max_new_tokens=2 from unpadded single-prompt forwards:
    outcome 0 = [EOS]; outcome 1 + 10·a + b = [a, b] for a ≠ EOS."""
    model64 = model.to(torch.float64)
    try:
        with torch.no_grad():
            first = torch.softmax(model64(input_ids=torch.tensor([prompt])).logits[0, -1] / temperature, -1)
            ids = torch.tensor([prompt + [a] for a in range(VOCAB) if a != EOS])
            second = torch.softmax(model64(input_ids=ids).logits[:, -1] / temperature, -1)  # [9, V]
    finally:
        model.to(torch.float32)
    probs = torch.zeros(1 + VOCAB * VOCAB, dtype=torch.float64)
    probs[0] = first[EOS]
    for row, a in enumerate(a for a in range(VOCAB) if a != EOS):
        probs[1 + VOCAB * a : 1 + VOCAB * (a + 1)] = first[a] * second[row]
    return probs


def _outcome(samples: Samples) -> torch.Tensor:
    ids = samples.response_ids
    if ids.shape[1] == 1:
        ids = torch.cat([ids, torch.full_like(ids, PAD)], 1)
    first_eos = ids[:, 0] == EOS
    return torch.where(first_eos, torch.zeros_like(ids[:, 0]), 1 + VOCAB * ids[:, 0] + ids[:, 1])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_padded_kv_cached_generation_samples_the_exact_distribution(tiny_lm, temperature):
    """Prompts of lengths 5, 1, 3, 2 decoded together (left padding, position ids, KV cache, EOS handling):
    3000 two-token responses per prompt vs the exact distribution from unpadded forwards, chi-square."""
    n = 3000
    cfg = SamplingConfig(temperature=temperature, max_new_tokens=2, batch_size=256)
    s = sample_responses(tiny_lm, PROMPTS, n, cfg, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(3))
    outcomes = _outcome(s)
    exact = torch.stack([_exact_two_token_distribution(tiny_lm, p, temperature) for p in PROMPTS])
    assert torch.allclose(exact.sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-12, rtol=0)
    sampled = [outcomes[s.prompt_index == i] for i in range(len(PROMPTS))]
    res = binned_chisquare(sampled, exact)
    print(f"padded generation T={temperature}: {res}")
    assert res["impossible"] == 0
    assert res["pvalue"] > 1e-3, res
    # power: each prompt's samples reject the next prompt's distribution (a padding/position bug would mix them)
    wrong = binned_chisquare(sampled, exact.roll(1, 0))
    assert wrong["pvalue"] < 1e-6, wrong


def test_padded_batch_log_probs_equal_single_row_log_probs(tiny_lm):
    """response_logits on a left/right-padded batch gives each row the log-probs of that row alone, unpadded."""
    cfg = SamplingConfig(max_new_tokens=6, batch_size=64)
    s = sample_responses(tiny_lm, PROMPTS, 6, cfg, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(4))
    assert s.response_mask.sum(-1).min() < s.response_ids.shape[1]  # some rows are right-padded
    with torch.no_grad():
        batched = token_log_probs(response_logits(tiny_lm, s, 0.8), s)
        for j in range(len(s)):
            prompt = torch.tensor([_strip_prompt(s, j)])
            length = int(s.response_mask[j].sum())
            resp = s.response_ids[j : j + 1, :length]
            single = Samples(
                s.prompt_index[j : j + 1], prompt, torch.ones_like(prompt), resp, torch.ones_like(resp)
            )
            alone = token_log_probs(response_logits(tiny_lm, single, 0.8), single)[0]
            assert torch.allclose(batched[j, :length], alone, atol=1e-5, rtol=0), j
            assert (batched[j, length:] == 0).all()  # zero on padding
            assert math.isfinite(float(alone.sum()))


def test_samples_cat_and_select_keep_rows_aligned():
    a = Samples(torch.tensor([0]), torch.tensor([[1, 2]]), torch.tensor([[1, 1]]), torch.tensor([[3]]),
                torch.tensor([[1]]), torch.tensor([0.5]))
    b = Samples(torch.tensor([1]), torch.tensor([[4]]), torch.tensor([[1]]), torch.tensor([[5, 6, 7]]),
                torch.tensor([[1, 1, 0]]), torch.tensor([1.5]))
    c = Samples.cat([a, b], pad_id=0)
    assert c.prompt_ids.tolist() == [[1, 2], [0, 4]] and c.prompt_mask.tolist() == [[1, 1], [0, 1]]
    assert c.response_ids.tolist() == [[3, 0, 0], [5, 6, 7]] and c.response_mask.tolist() == [[1, 0, 0], [1, 1, 0]]
    assert c.rewards.tolist() == [0.5, 1.5]
    d = c.select(torch.tensor([1, 0]))
    assert d.prompt_index.tolist() == [1, 0] and d.rewards.tolist() == [1.5, 0.5]
    assert np.array_equal(d.response_ids.numpy(), c.response_ids.numpy()[[1, 0]])
