"""vbon_exp/pool_estimators.py: BoN from a pool of reference samples — the order-statistic weights of the
U-statistic, averages over all N-subsets with ties, the tie-aware KL on reward levels, and the N of `n=all`."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import seeded
from test_bon import _random_support

from vbon_exp import bon, pool_estimators


def test_bon_order_weights_are_the_binomial_ratios():
    """w_k = C(k−1, N−1)/C(M, N) against math.comb (exact integers), every N of M = 12; rows sum to 1."""
    m = 12
    w = pool_estimators.bon_order_weights(m, range(1, m + 1))
    for n in range(1, m + 1):
        for k in range(1, m + 1):
            assert w[n - 1, k - 1].item() == pytest.approx(math.comb(k - 1, n - 1) / math.comb(m, n), rel=1e-12, abs=0)
    assert torch.allclose(w.sum(-1), torch.ones(m, dtype=torch.float64), atol=1e-12, rtol=0)


def test_bon_order_weights_stay_finite_for_large_pools():
    """C(1024, 256) has 244 digits: the log-binomials keep every weight finite, each row summing to 1; the best of
    N = M is the top sample, of N = 1 the uniform average."""
    w = pool_estimators.bon_order_weights(1024, [1, 64, 256, 1024])
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-10, rtol=0)
    assert torch.allclose(w[0], torch.full((1024,), 1 / 1024, dtype=torch.float64), atol=1e-15, rtol=0)
    assert w[3, -1].item() == pytest.approx(1.0, abs=1e-12) and w[3, :-1].abs().max().item() < 1e-12


@pytest.mark.parametrize("bad", [0, 13])
def test_bon_order_weights_reject_n_outside_the_pool(bad):
    with pytest.raises(ValueError, match="1 ≤ N ≤ M"):
        pool_estimators.bon_order_weights(12, [bad])


def test_bon_pool_mean_is_the_average_over_all_subsets_with_ties():
    """The U-statistic equals the brute-force average of h(best of the subset) over all C(M, N) subsets of a pool
    with ties (rewards from {0, 1, 2}), for h = the reward and for h = a step function of it."""
    g = seeded(3)
    pool = torch.randint(0, 3, (9,), generator=g).to(torch.float64).sort().values
    assert len(torch.unique(pool)) < len(pool)  # precondition: ties
    ns = list(range(1, 10))
    w = pool_estimators.bon_order_weights(9, ns)
    for h in (lambda r: r, lambda r: (r > 1).to(torch.float64)):
        got = pool_estimators.bon_pool_mean(h(pool), w)
        for j, n in enumerate(ns):
            subsets = list(itertools.combinations(range(9), n))
            expected = sum(float(h(pool[list(s)].max())) for s in subsets) / len(subsets)
            assert got[j].item() == pytest.approx(expected, abs=1e-12), n


def test_pool_levels():
    level, counts = pool_estimators.pool_levels(torch.tensor([-1.0, 0.5, 0.5, 0.5, 2.0, 3.0, 3.0]))
    assert level.tolist() == [0, 1, 1, 1, 2, 3, 3] and counts.tolist() == [1, 3, 1, 2]


@pytest.mark.parametrize("n", [1, 2, 4, 16, 64])
def test_kl_bon_levels_without_atoms_is_the_continuous_value(n):
    """No tied level: G(1) − G(0) = log N − (N−1)/N whatever the masses (random, one zero)."""
    g = seeded(n)
    q = torch.rand(50, generator=g, dtype=torch.float64)
    q[7] = 0.0
    q = q / q.sum()
    got = pool_estimators.kl_bon_levels(q, torch.zeros(50, dtype=torch.bool), n)
    assert got.item() == pytest.approx(bon.kl_bon_analytic(n), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 64])
def test_kl_bon_levels_with_atoms_is_the_exact_tie_aware_kl(n):
    """All levels atomic, with the exact level masses of a tied support: KL(π_BoN ‖ π_ref) of bon_log_probs."""
    logp, rewards = _random_support(40, ties=True, seed=30 + n)
    exact = bon.kl(bon.bon_log_probs(logp, rewards, n), logp)
    for b in range(logp.shape[0]):
        values = torch.unique(rewards[b])  # ascending
        q = torch.stack([logp[b][rewards[b] == v].exp().sum() for v in values])
        got = pool_estimators.kl_bon_levels(q, torch.ones(len(values), dtype=torch.bool), n)
        assert got.item() == pytest.approx(exact[b].item(), abs=1e-10), b


def test_kl_bon_levels_never_exceeds_the_continuous_value_and_ignores_empty_levels():
    """Atoms only lower the KL (log-sum inequality), whatever mix of atomic and continuous levels; a level of mass 0
    adds nothing. The check has power: with atoms the value is clearly below log N − (N−1)/N."""
    g = seeded(4)
    q = torch.rand(200, 30, generator=g, dtype=torch.float64) ** 3
    q = q / q.sum(-1, keepdim=True)
    atomic = torch.rand(200, 30, generator=g) < 0.5
    for n in (2, 8, 64):
        got = pool_estimators.kl_bon_levels(q, atomic, n)
        assert (got <= bon.kl_bon_analytic(n) + 1e-12).all()
        assert got.min().item() < bon.kl_bon_analytic(n) - 1e-3
        padded = pool_estimators.kl_bon_levels(torch.cat([q, torch.zeros(200, 3, dtype=torch.float64)], -1),
                                   torch.cat([atomic, torch.ones(200, 3, dtype=torch.bool)], -1), n)
        assert torch.allclose(padded, got, atol=1e-12, rtol=0)


def test_bon_pool_ns_are_powers_of_two_up_to_a_quarter_of_the_pool():
    assert pool_estimators.bon_pool_ns(256) == [1, 2, 4, 8, 16, 32, 64]
    assert pool_estimators.bon_pool_ns(1000) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert pool_estimators.bon_pool_ns(4) == [1]
