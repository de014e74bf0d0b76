"""vbon_exp/sampling.py: logit filters, the inverse-CDF draw, and batched generation with padding and EOS.

Statistical tests are chi-square goodness-of-fit tests on fixed-seed torch.Generators: each p-value is a
deterministic number, and the bar p > 1e-3 would reject a correct sampler for only 1 in 1000 seeds. Each also
checks the power side (a slightly wrong distribution is rejected), so it can fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import seeded, shifted
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

    torch.manual_seed(shifted(0))
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
    logits = torch.randn(3, 7, generator=seeded(0))
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
    draws = inverse_cdf_sample(weights.expand(n, -1), seeded(0))
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
    assert (inverse_cdf_sample(probs, seeded(1)) == 2).all()
    w = torch.rand(50, 8, generator=seeded(2))
    a = inverse_cdf_sample(w, seeded(3))
    b = inverse_cdf_sample(w, seeded(3))
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
    draws = sample_next_token(logits.expand(n, -1), cfg, seeded(4))
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
    s = sample_responses(tiny_lm, PROMPTS, n, cfg, eos_id=EOS, pad_id=PAD, generator=seeded(0))
    assert len(s) == n * len(PROMPTS)
    assert s.prompt_index.tolist() == [i for i in range(len(PROMPTS)) for _ in range(n)]
    for j in range(len(s)):
        assert _strip_prompt(s, j) == PROMPTS[j // n]
        # left padding: the real prompt tokens are the last ones
        assert s.prompt_mask[j, -1] == 1
    # a custom prompt_index labels rows with the caller's ids, same grouping
    s2 = sample_responses(
        tiny_lm, PROMPTS, 2, cfg, eos_id=EOS, pad_id=PAD, generator=seeded(0),
        prompt_index=[10, 11, 12, 13],
    )
    assert s2.prompt_index.tolist() == [10, 10, 11, 11, 12, 12, 13, 13]
    assert [_strip_prompt(s2, j) for j in range(8)] == [p for p in PROMPTS for _ in range(2)]


def test_sample_responses_is_deterministic_given_the_seed(tiny_lm):
    cfg = SamplingConfig(max_new_tokens=6, batch_size=7)
    a = sample_responses(tiny_lm, PROMPTS, 4, cfg, eos_id=EOS, pad_id=PAD, generator=seeded(9))
    b = sample_responses(tiny_lm, PROMPTS, 4, cfg, eos_id=EOS, pad_id=PAD, generator=seeded(9))
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.response_mask, b.response_mask)


def test_response_mask_stops_after_eos(tiny_lm):
    cfg = SamplingConfig(max_new_tokens=8, batch_size=64)
    s = sample_responses(tiny_lm, PROMPTS, 50, cfg, eos_id=EOS, pad_id=PAD, generator=seeded(1))
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
    s = sample_responses(tiny_lm, PROMPTS, 3, cfg, eos_id=None, pad_id=PAD, generator=seeded(2))
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
    s = sample_responses(tiny_lm, PROMPTS, n, cfg, eos_id=EOS, pad_id=PAD, generator=seeded(3))
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
    s = sample_responses(tiny_lm, PROMPTS, 6, cfg, eos_id=EOS, pad_id=PAD, generator=seeded(4))
    s.response_mask[0, 2:], s.response_ids[0, 2:] = 0, PAD  # a right-padded row whatever the draws (a prefix of one)
    assert s.response_mask.sum(-1).min() < s.response_ids.shape[1]
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


# --------------------------------------------------------------------------- the fast sampler: large vocabularies


def test_two_level_inverse_cdf_across_blocks_and_the_partial_tail_block():
    """V = 700 is two full blocks of BLOCK = 256 and a partial one: mass in every block (the tail included), zeros
    at block edges and inside blocks, one whole block empty; 60,000 draws against the exact probabilities."""
    from vbon_exp.sampling import BLOCK

    vocab = 700
    assert BLOCK == 256 and vocab % BLOCK  # precondition: a partial last block
    g = seeded(5)
    weights = torch.zeros(vocab, dtype=torch.float32)
    support = torch.tensor([0, 3, 100, 255, 256 + 7, 256 + 200, 512, 600, 650, 699])  # block 1 ≠ empty
    weights[support] = torch.rand(len(support), generator=g) * 5 + 0.2
    weights[256:512] = 0.0
    weights[256 + 7], weights[256 + 200] = 0.0, 0.0  # block 1 entirely empty
    support = weights > 0
    n = 60000
    draws = inverse_cdf_sample(weights.expand(n, -1).contiguous(), seeded(6))
    counts = torch.bincount(draws, minlength=vocab)
    assert counts[~support].sum().item() == 0  # never a zero-weight token, never an empty block
    p = weights.double() / weights.double().sum()
    res = stats.chisquare(counts[support].numpy(), (p[support] * n).numpy())
    assert res.pvalue > 1e-3, res
    q = p.clone()  # power: move 2% of the mass from the last token to the first
    q[0], q[699] = q[0] + 0.02, q[699] - 0.02
    assert stats.chisquare(counts[support].numpy(), (q[support] * n).numpy()).pvalue < 1e-6


def test_two_level_inverse_cdf_tiny_masses_next_to_huge_ones():
    """Weights spanning 60 orders of magnitude: the tiny ones are (essentially) never drawn, zeros never, no
    out-of-range index; rows whose only mass sits in the last token of the partial block."""
    vocab = 1000
    w = torch.zeros(4, vocab)
    w[0, 0], w[0, 999] = 1.0, 1e-30
    w[1, 999] = 1e-30  # all the mass in the very last token
    w[2, 512] = 3.0
    w[3] = 1.0
    draws = inverse_cdf_sample(w.repeat(500, 1), seeded(0)).view(500, 4)
    assert (draws[:, 0] == 0).all() and (draws[:, 1] == 999).all() and (draws[:, 2] == 512).all()
    assert ((draws[:, 3] >= 0) & (draws[:, 3] < vocab)).all()


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 0), (0.7, 300)], ids=["T1", "T0.7", "T0.7-top300"])
def test_sample_next_token_on_a_large_vocabulary_matches_the_filtered_softmax(temperature, top_k):
    """V = 5,000 (20 blocks): 40,000 draws of sample_next_token vs the exact (top-k filtered) softmax at the
    temperature, binned chi-square; top-300 keeps tokens spread over every block and is never left."""
    vocab = 5000
    g = seeded(1)
    logits = torch.randn(vocab, generator=g) * 2.0
    cfg = SamplingConfig(temperature=temperature, top_k=top_k)
    scaled = logits.double() / temperature
    keep = torch.ones(vocab, dtype=torch.bool)
    if top_k:
        keep = torch.zeros(vocab, dtype=torch.bool)
        keep[torch.topk(scaled, top_k).indices] = True
        assert len(set((torch.nonzero(keep).squeeze(1) // 256).tolist())) == 20  # the kept tokens span all blocks
    probs = torch.where(keep, torch.softmax(scaled.masked_fill(~keep, float("-inf")), -1), torch.zeros(vocab,
                                                                                                     dtype=torch.float64))
    n = 40000
    draws = sample_next_token(logits.expand(n, -1).contiguous(), cfg, seeded(2))
    res = binned_chisquare([draws], probs[None], key=torch.argsort(torch.argsort(-probs))[None].double(), n_bins=40)
    print(f"V=5000 T={temperature} top_k={top_k}: {res}")
    assert res["impossible"] == 0
    assert res["pvalue"] > 1e-3, res
    # power: the same draws reject the distribution at a 10% different temperature
    wrong = torch.where(keep, torch.softmax((scaled * 1.1).masked_fill(~keep, float("-inf")), -1),
                        torch.zeros(vocab, dtype=torch.float64))
    assert binned_chisquare([draws], wrong[None], key=torch.argsort(torch.argsort(-probs))[None].double(),
                            n_bins=40)["pvalue"] < 1e-6


def _full_sort_top_p_keep(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus by sorting the whole vocabulary's probabilities (the definition, same float arithmetic)."""
    values, order = torch.sort(torch.softmax(logits, dim=-1), dim=-1, descending=True)
    mass_before = torch.cumsum(values, dim=-1) - values
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_before < top_p)


@pytest.mark.parametrize("scale", [4.0, 0.1], ids=["peaked-candidates", "flat-full-sort"])
def test_top_p_on_a_large_vocabulary_equals_the_full_sort(scale):
    """V = 5,000: a peaked distribution (the nucleus lies in the top-1024 candidates) and a flat one (it does not:
    the full sort) give the nucleus of the definition."""
    logits = torch.randn(8, 5000, generator=seeded(3)) * scale
    for top_p in (0.5, 0.9, 0.99):
        kept = torch.isfinite(filter_logits(logits, 0, top_p))
        assert torch.equal(kept, _full_sort_top_p_keep(logits, top_p)), top_p
    if scale < 1:  # precondition of the fallback case: the candidates hold less than top_p
        top = torch.topk(torch.softmax(logits, -1), 1024, -1).values.sum(-1)
        assert bool((top < 0.5).any())


def _exact_three_token_distribution(model, prompt: list[int], temperature: float) -> torch.Tensor:
    """Exact probabilities of every response with max_new_tokens=3 as outcome 100·t0 + 10·t1 + t2 (PAD = 0 after
    EOS), from unpadded float64 forwards."""
    probs = torch.zeros(1000, dtype=torch.float64)
    model64 = model.to(torch.float64)
    try:
        with torch.no_grad():
            def step(prefixes):
                ids = torch.tensor([prompt + p for p in prefixes])
                return torch.softmax(model64(input_ids=ids).logits[:, -1] / temperature, -1)

            first = step([[]])[0]
            ones = [[a] for a in range(VOCAB) if a != EOS]
            second = step(ones)
            twos = [[a, b] for a in range(VOCAB) if a != EOS for b in range(VOCAB) if b != EOS]
            third = step(twos)
    finally:
        model.to(torch.float32)
    probs[100 * EOS] = first[EOS]
    for row, (a,) in enumerate(ones):
        probs[100 * a + 10 * EOS] = first[a] * second[row, EOS]
    for row, (a, b) in enumerate(twos):
        pa, pb = first[a], second[ones.index([a]), b]
        probs[100 * a + 10 * b : 100 * a + 10 * b + 10] = pa * pb * third[row]
    return probs


def test_dropping_finished_rows_keeps_the_exact_distribution(tiny_lm, monkeypatch):
    """Finished rows leave the batch and the KV cache (forced after every EOS here): three-token responses of four
    left-padded prompts still follow the exact distribution (chi-square), and the cut did happen."""
    import vbon_exp.sampling as sampling

    cuts = []
    real = sampling._select_cache_rows

    def counting(cache, idx):
        cuts.append(len(idx))
        return real(cache, idx)

    monkeypatch.setattr(sampling, "COMPACT_FRACTION", 1e-9)  # drop finished rows at once
    monkeypatch.setattr(sampling, "_select_cache_rows", counting)
    n = 3000
    cfg = SamplingConfig(temperature=0.7, max_new_tokens=3, batch_size=512)
    s = sample_responses(tiny_lm, PROMPTS, n, cfg, eos_id=EOS, pad_id=PAD, generator=seeded(8))
    assert cuts and min(cuts) < 512  # rows were dropped
    ids = torch.nn.functional.pad(s.response_ids, (0, 3 - s.response_ids.shape[1]), value=PAD)
    outcomes = 100 * ids[:, 0] + 10 * ids[:, 1] + ids[:, 2]
    exact = torch.stack([_exact_three_token_distribution(tiny_lm, p, 0.7) for p in PROMPTS])
    assert torch.allclose(exact.sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-12, rtol=0)
    sampled = [outcomes[s.prompt_index == i] for i in range(len(PROMPTS))]
    # impossible outcomes (anything after EOS) first in the bin order, so no bin is all impossible
    key = torch.where(exact > 0, torch.arange(1000, dtype=torch.float64), -1.0)
    res = binned_chisquare(sampled, exact, key)
    print(f"3-token generation with dropped rows: {res}")
    assert res["impossible"] == 0
    assert res["pvalue"] > 1e-3, res
    assert binned_chisquare(sampled, exact.roll(1, 0), key.roll(1, 0))["pvalue"] < 1e-6
    # masks: 1 up to and including EOS, then 0 (the dropped rows were written back to their own places)
    for j in range(len(s)):
        row = ids[j].tolist()
        length = row.index(EOS) + 1 if EOS in row else 3
        assert s.response_mask[j, :length].all() and not s.response_mask[j, length:].any()


# --------------------------------------------------------------------------- sampler backends


def _vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(_vllm_installed(), reason="vllm is installed: the missing-package error cannot be shown")
def test_vllm_backend_without_vllm_fails_before_sampling(tiny_lm):
    import vbon_exp.vllm_backend  # noqa: F401  (registers sampler=vllm, as vbon_exp.config does)
    from vbon_exp.sampling import SamplerBackendError, check_backend

    with pytest.raises(SamplerBackendError, match=r"sampler=vllm needs the `vllm` package.*pip install vllm"):
        check_backend("vllm")
    with pytest.raises(SamplerBackendError, match="vllm"):
        sample_responses(tiny_lm, PROMPTS, 2, SamplingConfig(max_new_tokens=2, backend="vllm"), eos_id=EOS,
                         pad_id=PAD, generator=seeded(0))
    with pytest.raises(SamplerBackendError, match="native"):
        check_backend("nope")


@pytest.mark.skipif(_vllm_installed(), reason="vllm is installed: the missing-package error cannot be shown")
def test_selecting_sampler_vllm_stops_the_run_before_anything_is_sampled(make_config, monkeypatch):
    """`sampler=vllm` without the package: the run stops with a ConfigError naming the package (the CLI prints it
    as one line, exit 2) before any model is built or any sample drawn."""
    from conftest import CONF_DIR

    import vbon_exp.reference
    import vbon_exp.run
    from vbon_exp.config import ConfigError

    def refuse(*args, **kwargs):
        raise AssertionError("sampled although the sampler backend is unusable")

    monkeypatch.setattr(vbon_exp.reference, "sample_responses", refuse)
    monkeypatch.setattr(vbon_exp.run, "build_task", refuse)
    in_defaults = "- sampler:" in (CONF_DIR / "config.yaml").read_text()
    cfg = make_config("sampler=vllm" if in_defaults else "+sampler=vllm", "wandb.mode=disabled", "device=cpu")
    assert cfg.sampling.backend == "vllm"
    with pytest.raises(ConfigError, match=r"sampler=vllm.*`vllm` package.*pip install vllm"):
        vbon_exp.run.run(cfg)
