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


@pytest.mark.parametrize("n", [1, 2, 4, 16])
def test_log_bon_ratio_from_counts_is_bon_on_the_caches_levels(n):
    """A reward the cache holds: the tie-aware log π_BoN/π_ref of bon.bon_log_probs on the cache's empirical
    distribution (each cached reward an atom of mass count/M); one it does not hold: log N + (N−1)·log F̂ with
    F̂ = (#< + 1)/(M + 1) (bon.log_bon_ratio_estimate). Tolerance 1e-10 (the same closed form by two routes)."""
    g = seeded(40 + n)
    cache = torch.randint(0, 6, (30,), generator=g).to(torch.float64).sort().values  # ties: 6 levels, 30 draws
    levels, counts = torch.unique(cache, return_counts=True)
    log_mass = torch.log(counts.to(torch.float64) / len(cache))
    exact = bon.bon_log_probs(log_mass, levels, n) - log_mass  # log π_BoN/π_ref of each level
    less = torch.tensor([int((cache < v).sum()) for v in levels])
    less_equal = torch.tensor([int((cache <= v).sum()) for v in levels])
    got = pool_estimators.log_bon_ratio_from_counts(less, less_equal, len(cache), n)
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-10)
    absent = torch.tensor([-1.0, 2.5, 9.0], dtype=torch.float64)  # below, between and above the cached levels
    below = torch.tensor([int((cache < v).sum()) for v in absent])
    continuous = bon.log_bon_ratio_estimate(bon.log_cdf_hat_from_counts(below, len(cache)), n)
    torch.testing.assert_close(pool_estimators.log_bon_ratio_from_counts(below, below, len(cache), n), continuous,
                               rtol=0, atol=1e-12)
    if n > 1:  # the check has power: on the cached levels the continuous formula is another number
        wrong = bon.log_bon_ratio_estimate(bon.log_cdf_hat_from_counts(less, len(cache)), n)
        assert (wrong - exact).abs().max() > 0.1


def test_subset_positions_enumerate_small_pools_and_draw_blocks_of_permutations_otherwise():
    """C(M, N) ≤ budget: every N-subset once, the same in every row (no draw). Otherwise ⌈budget/⌊M/N⌋⌉ permutations
    per row, each cut into ⌊M/N⌋ disjoint blocks: each permutation's blocks hold distinct positions, rows differ
    (drawn afresh), and at N = 1 each permutation is every position once."""
    every = pool_estimators.subset_positions(6, 3, 20, 4, seeded(0))
    assert every.shape == (4, 20, 3) and (every == every[:1]).all()
    assert sorted(map(tuple, every[0].tolist())) == list(itertools.combinations(range(6), 3))
    drawn = pool_estimators.subset_positions(10, 3, 7, 5, seeded(1))  # 3 blocks per permutation: 3 permutations
    assert drawn.shape == (5, 9, 3)
    for row in drawn:
        for permutation in row.view(3, 9):
            assert len(set(permutation.tolist())) == 9
    assert not (drawn == drawn[:1]).all()
    singles = pool_estimators.subset_positions(50, 1, 30, 3, seeded(2))  # C(50, 1) > 30: one permutation
    assert singles.shape == (3, 50, 1) and all(sorted(r.flatten().tolist()) == list(range(50)) for r in singles)
    with pytest.raises(ValueError, match="1 ≤ N ≤ M"):
        pool_estimators.subset_positions(5, 6, 10, 1, seeded(0))
