"""vbon_exp/bon.py: the BoN math, checked against brute-force Python loops and enumerations in float64.

All inputs come from fixed-seed generators; every comparison is exact or to 1e-12 / 1e-9 (float64 round-off),
so nothing here is statistical."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import seeded

from vbon_exp import bon

# --------------------------------------------------------------------------- empirical CDF of cached rewards


def _ragged_rows(seed: int = 0):
    """Rows of different M with rewards from a small integer set (many ties), unsorted."""
    g = seeded(seed)
    return [torch.randint(-3, 4, (m,), generator=g).to(torch.float32) for m in (1, 2, 5, 17, 64)]


def _queries(rows, seed: int = 1):
    """Queries per row: every value of the small set (so many equal cached values), out-of-range values and
    non-integers, each tagged with its row."""
    values = [-5.0, -3.0, -2.5, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 3.5, 7.0]
    prompt, rewards = [], []
    for i in range(len(rows)):
        for v in values:
            prompt.append(i)
            rewards.append(v)
    g = seeded(seed)
    perm = torch.randperm(len(prompt), generator=g)  # queries in no particular row order
    return torch.tensor(prompt)[perm], torch.tensor(rewards, dtype=torch.float32)[perm]


def test_pad_sorted_rewards_sorts_and_pads_with_inf():
    rows = _ragged_rows()
    table, lengths = bon.pad_sorted_rewards(rows)
    assert table.dtype == torch.float64
    assert lengths.tolist() == [len(r) for r in rows]
    assert table.shape == (len(rows), max(len(r) for r in rows))
    for i, r in enumerate(rows):
        assert table[i, : len(r)].tolist() == sorted(r.tolist())
        assert torch.isinf(table[i, len(r) :]).all() and (table[i, len(r) :] > 0).all()


def test_cdf_lookups_match_brute_force_with_ties_and_ragged_rows():
    rows = _ragged_rows()
    table, lengths = bon.pad_sorted_rewards(rows)
    pidx, r = _queries(rows)
    log_f = bon.log_cdf_hat(table, lengths, pidx, r)
    le = bon.cdf_le(table, lengths, pidx, r)
    lt = bon.cdf_lt(table, lengths, pidx, r)
    win = bon.win_prob(table, lengths, pidx, r)
    for j in range(len(pidx)):
        cached = rows[int(pidx[j])].tolist()
        q = float(r[j])
        m = len(cached)
        less = sum(c < q for c in cached)
        equal = sum(c == q for c in cached)
        assert log_f[j].item() == pytest.approx(math.log((less + 1) / (m + 1)), abs=1e-12)
        assert lt[j].item() == pytest.approx(less / m, abs=1e-12)
        assert le[j].item() == pytest.approx((less + equal) / m, abs=1e-12)
        assert win[j].item() == pytest.approx((less + 0.5 * equal) / m, abs=1e-12)
    assert torch.isfinite(log_f).all() and (log_f <= 0).all()


def test_count_helpers_match_brute_force():
    rows = _ragged_rows(3)
    table, _ = bon.pad_sorted_rewards(rows)
    pidx, r = _queries(rows, 4)
    less = bon.count_less(table, pidx, r)
    less_eq = bon.count_less_equal(table, pidx, r)
    for j in range(len(pidx)):
        cached = rows[int(pidx[j])].tolist()
        assert int(less[j]) == sum(c < float(r[j]) for c in cached)
        assert int(less_eq[j]) == sum(c <= float(r[j]) for c in cached)


# --------------------------------------------------------------------------- exact BoN on a finite support


def _random_support(k: int, ties: bool, seed: int, batch=(3,)):
    g = seeded(seed)
    logp = torch.log_softmax(torch.randn(*batch, k, generator=g, dtype=torch.float64) * 2, dim=-1)
    if ties:
        rewards = torch.randint(0, max(2, k // 3), (*batch, k), generator=g).to(torch.float64)
    else:
        rewards = torch.randn(*batch, k, generator=g, dtype=torch.float64)
    return logp, rewards


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 50])
def test_bon_log_probs_normalised(ties, n):
    logp, rewards = _random_support(40, ties, seed=n)
    lp_bon = bon.bon_log_probs(logp, rewards, n)
    assert lp_bon.shape == logp.shape
    assert torch.allclose(lp_bon.exp().sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-9, rtol=0)


def test_bon_with_n1_is_the_reference():
    logp, rewards = _random_support(30, True, seed=7)
    assert torch.allclose(bon.bon_log_probs(logp, rewards, 1), logp, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [2, 3, 5, 16])
def test_bon_log_probs_match_paper_formula_for_distinct_rewards(n):
    """π_BoN(y) = Σ_{i=1..N} C(N,i) F⁻(y)^(N−i) π_ref(y)^i with F⁻(y) = P(r < r(y)), computed naively."""
    logp, rewards = _random_support(25, ties=False, seed=100 + n)
    lp_bon = bon.bon_log_probs(logp, rewards, n)
    p = logp.exp()
    for b in range(p.shape[0]):
        for y in range(p.shape[1]):
            f_lt = float(p[b][rewards[b] < rewards[b, y]].sum())
            expected = sum(math.comb(n, i) * f_lt ** (n - i) * float(p[b, y]) ** i for i in range(1, n + 1))
            assert math.exp(lp_bon[b, y].item()) == pytest.approx(expected, abs=1e-12, rel=1e-9)


def _bon_by_enumeration(p: list[float], r: list[float], n: int) -> list[float]:
    """Enumerate all K^N draws; the winner is the first index holding the maximum reward."""
    k = len(p)
    out = [0.0] * k
    for draw in itertools.product(range(k), repeat=n):
        best = draw[0]
        for y in draw[1:]:
            if r[y] > r[best]:
                best = y
        out[best] += math.prod(p[y] for y in draw)
    return out


@pytest.mark.parametrize(
    "rewards",
    [[1.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 2.0, 1.0], [3.0, 1.0, 2.0, 0.0]],
    ids=["pair-tie", "all-tied", "two-pairs", "distinct"],
)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_bon_log_probs_match_enumeration_with_ties(rewards, n):
    p = [0.1, 0.2, 0.3, 0.4]
    got = bon.bon_log_probs(torch.tensor(p, dtype=torch.float64).log(), torch.tensor(rewards), n).exp()
    expected = _bon_by_enumeration(p, rewards, n)
    for a, b in zip(got.tolist(), expected):
        assert a == pytest.approx(b, abs=1e-12)


def test_bon_log_probs_match_enumeration_on_random_tied_support():
    g = seeded(5)
    p = torch.softmax(torch.randn(5, generator=g, dtype=torch.float64), -1)
    r = torch.tensor([1.0, 0.0, 1.0, 2.0, 0.0])
    got = bon.bon_log_probs(p.log(), r, 4).exp()
    expected = _bon_by_enumeration(p.tolist(), r.tolist(), 4)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)


def test_log_reward_cdfs_stay_finite_where_linear_space_underflows():
    """π_ref masses of e^-800 underflow to 0 in float64; the log-space CDFs must still be exact."""
    logp = torch.tensor([-800.0, -801.0, -802.0, 0.0], dtype=torch.float64)  # (not normalised: fine here)
    rewards = torch.tensor([0.0, 1.0, 1.0, 5.0], dtype=torch.float64)
    log_le, log_lt, log_level = bon.log_reward_cdfs(logp, rewards)
    assert torch.isinf(log_lt[0]) and log_lt[0] < 0  # nothing below the lowest reward
    assert log_lt[1].item() == pytest.approx(-800.0, abs=1e-12)
    assert log_lt[2].item() == pytest.approx(-800.0, abs=1e-12)
    assert log_level[1].item() == pytest.approx(torch.logsumexp(logp[1:3], 0).item(), abs=1e-12)
    assert log_le[2].item() == pytest.approx(torch.logsumexp(logp[:3], 0).item(), abs=1e-12)
    assert log_lt[3].item() == pytest.approx(torch.logsumexp(logp[:3], 0).item(), abs=1e-12)
    assert log_le[3].item() == 0.0  # clamped: the whole mass


def test_reward_cdfs_match_brute_force_with_ties():
    logp, rewards = _random_support(12, ties=True, seed=9, batch=(2,))
    f_le, f_lt = bon.reward_cdfs(logp, rewards)
    p = logp.exp()
    for b in range(2):
        for y in range(12):
            assert f_le[b, y].item() == pytest.approx(float(p[b][rewards[b] <= rewards[b, y]].sum()), abs=1e-12)
            assert f_lt[b, y].item() == pytest.approx(float(p[b][rewards[b] < rewards[b, y]].sum()), abs=1e-12)


def test_kl_ignores_zero_mass_terms():
    logp = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64).log()
    logq = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64).log()
    assert bon.kl(logp, logq).item() == pytest.approx(math.log(2), abs=1e-15)
    assert bon.kl(logq, logq).item() == 0.0


# --------------------------------------------------------------------------- vBoN rewards


@pytest.mark.parametrize("n", [1, 2, 4, 9])
def test_log_bon_ratio_exact_matches_naive_sum(n):
    g = seeded(n)
    f = torch.rand(50, generator=g, dtype=torch.float64) * 0.999 + 1e-3
    pref = torch.rand(50, generator=g, dtype=torch.float64) * 0.2 + 1e-6
    got = bon.log_bon_ratio_exact(f.log(), pref.log(), n)
    for j in range(50):
        naive = sum(math.comb(n, i) * float(f[j]) ** (n - i) * float(pref[j]) ** (i - 1) for i in range(1, n + 1))
        assert got[j].item() == pytest.approx(math.log(naive), abs=1e-12)


def test_log_bon_ratio_exact_at_zero_cdf_keeps_only_the_last_term():
    """F = 0 (log F = −inf): only i = N survives, ratio = π_ref^(N−1); N = 1 gives ratio 1."""
    log_f = torch.tensor([-math.inf, -math.inf], dtype=torch.float64)
    logp = torch.tensor([math.log(0.3), math.log(1e-200)], dtype=torch.float64)
    got = bon.log_bon_ratio_exact(log_f, logp, 3)
    assert torch.allclose(got, 2 * logp, atol=1e-12, rtol=0)
    assert bon.log_bon_ratio_exact(log_f, logp, 1).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("bad", [0, 2.5, -1])
def test_log_bon_ratio_exact_rejects_non_integer_n(bad):
    with pytest.raises(ValueError):
        bon.log_bon_ratio_exact(torch.zeros(1), torch.zeros(1), bad)


@pytest.mark.parametrize("n", [2, 4, 16])
def test_vbon_reward_exact_scales(n):
    g = seeded(n)
    log_f = torch.log(torch.rand(20, generator=g, dtype=torch.float64))
    logp = torch.log(torch.rand(20, generator=g, dtype=torch.float64) * 0.1)
    ratio = bon.log_bon_ratio_exact(log_f, logp, n)
    assert torch.allclose(bon.vbon_reward_exact(log_f, logp, n), ratio / (n - 1), atol=1e-14, rtol=0)
    assert torch.allclose(bon.vbon_reward_exact(log_f, logp, n, scale="beta"), ratio / (n - 1), atol=1e-14, rtol=0)
    assert torch.allclose(bon.vbon_reward_exact(log_f, logp, n, scale="seed"), ratio / n, atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="exact_scale"):
        bon.vbon_reward_exact(log_f, logp, n, scale="nope")


@pytest.mark.parametrize("n", [2, 4, 16])
def test_vbon_reward_l1_is_the_exact_reward_for_continuous_rewards_up_to_a_constant(n):
    """The l1 reward log F̂ is β·log(π_BoN/π_ref) for continuous rewards with the constant β·log N dropped (§3):
    as π_ref(y) → 0 the exact reward β·log Σ C(N,i) F^(N−i) π_ref^(i−1) tends to log F + β·log N, and β times the
    k1 estimate log N + (N−1)·log F is l1 + β·log N exactly. (The i ≥ 2 terms are O(π_ref/F) = 1e-12 here.)"""
    g = seeded(n)
    log_f = torch.log(torch.rand(50, generator=g, dtype=torch.float64) * 0.9 + 0.05)
    beta = bon.beta_from_n(n)
    l1 = bon.vbon_reward_l1(log_f)
    assert l1.shape == log_f.shape
    exact = bon.vbon_reward_exact(log_f, torch.full_like(log_f, math.log(1e-14)), n)
    assert torch.allclose(exact - l1, torch.full_like(l1, beta * math.log(n)), atol=1e-10, rtol=0)
    estimate = beta * bon.log_bon_ratio_estimate(log_f, n)
    assert torch.allclose(estimate - l1, torch.full_like(l1, beta * math.log(n)), atol=1e-12, rtol=0)
    # and the reward orders responses as their CDF does (a monotone transform: what RL on it rewards)
    order = torch.argsort(log_f)
    assert bool((l1[order][1:] >= l1[order][:-1]).all())


def _inputs(f_values, rewards=(0.3, -1.2, 2.0, 0.0), t=1.0):
    log_f = torch.log(torch.tensor(f_values, dtype=torch.float64))
    return bon.TransformInputs(torch.tensor(rewards, dtype=torch.float32), log_f, None, 4.0, "beta", t)


def test_calibrated_transforms_match_hand_values():
    """Φ of the calibrated reward F̂ (InfAlign's CTRL transforms): hand-computed values."""
    x = _inputs([0.25, 0.5, 1.0, 0.1])
    fn = bon.REWARD_TRANSFORMS
    torch.testing.assert_close(fn["identity"](x), torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float32).double())
    torch.testing.assert_close(fn["log_cdf"](x), torch.tensor([-1.3862943611198906, -0.6931471805599453, 0.0,
                                                               -2.3025850929940455], dtype=torch.float64))
    torch.testing.assert_close(fn["cdf"](x), torch.tensor([0.25, 0.5, 1.0, 0.1], dtype=torch.float64))
    # exp(t·F̂): t = 1 → e^0.25 = 1.2840254166877414, e^0.5 = 1.6487212707001282, e^1, e^0.1 = 1.1051709180756477
    torch.testing.assert_close(fn["exp_cdf"](x), torch.tensor([1.2840254166877414, 1.6487212707001282,
                                                               2.718281828459045, 1.1051709180756477],
                                                              dtype=torch.float64))
    # t = −2 (worst-of-N direction): e^−0.5, e^−1, e^−2, e^−0.2
    torch.testing.assert_close(fn["exp_cdf"](_inputs([0.25, 0.5, 1.0, 0.1], t=-2.0)),
                               torch.tensor([0.6065306597126334, 0.36787944117144233, 0.1353352832366127,
                                             0.8187307530779818], dtype=torch.float64))
    for name in ("cdf", "exp_cdf", "log_cdf"):
        assert fn[name](x).dtype == torch.float64


def test_the_transforms_that_read_the_cache_say_so():
    assert {"log_cdf", "exact", "cdf", "exp_cdf"} <= bon.TRANSFORMS_NEEDING_CDF
    assert "identity" not in bon.TRANSFORMS_NEEDING_CDF


def test_calibrated_transforms_are_monotone_in_the_quantile():
    f = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    for name, t in (("log_cdf", 1.0), ("cdf", 1.0), ("exp_cdf", 3.0)):
        values = bon.REWARD_TRANSFORMS[name](bon.TransformInputs(torch.zeros(50), torch.log(f), None, 4.0, t=t))
        assert bool((values[1:] > values[:-1]).all()), name


def test_log_bon_ratio_estimate():
    log_f = torch.tensor([0.0, -1.0, -2.5], dtype=torch.float64)
    expected = [math.log(4) + 3 * v for v in log_f.tolist()]
    assert torch.allclose(bon.log_bon_ratio_estimate(log_f, 4), torch.tensor(expected, dtype=torch.float64))


# --------------------------------------------------------------------------- N <-> β, analytic values


def _near_continuous_support():
    """K = 4000 distinct rewards with max π_ref mass 1.1e-3: rewards behave as continuous to ~1e-3."""
    g = seeded(11)
    logp = torch.log_softmax(torch.randn(4000, generator=g, dtype=torch.float64) * 0.5, -1)
    rewards = torch.randn(4000, generator=g, dtype=torch.float64)
    assert logp.exp().max().item() < 2e-3  # precondition
    return logp, rewards


def _tv_optimum_to_bon(logp, rewards, beta: float, n: float) -> float:
    """Total variation between the KL-regularised optimum of the l1 vBoN reward log F at β, and π_BoN with N."""
    log_f = bon.log_reward_cdfs(logp, rewards)[0]
    optimum = bon.kl_regularised_optimum_log_probs(logp, bon.vbon_reward_l1(log_f), beta).exp()
    return 0.5 * float((optimum - bon.bon_log_probs(logp, rewards, n).exp()).abs().sum())


@pytest.mark.parametrize("n", [2, 4, 16])
def test_beta_from_n_is_the_kl_coefficient_whose_optimum_is_bon(n):
    """What ties N and β (§3): RL on the l1 reward log F with KL coefficient β = beta_from_n(N) has optimum π_BoN
    (continuous rewards). On the near-continuous support: total variation ≤ 2e-3 (measured ≤ 4.7e-4; exact
    arithmetic on fixed inputs, nothing random). The check has power: β for N + 1, or β = 1/N (the `seed` scale),
    are ≥ 0.02 away, ten times the tolerance."""
    logp, rewards = _near_continuous_support()
    assert _tv_optimum_to_bon(logp, rewards, bon.beta_from_n(n), n) <= 2e-3
    assert _tv_optimum_to_bon(logp, rewards, bon.beta_from_n(n + 1), n) >= 0.02
    assert _tv_optimum_to_bon(logp, rewards, 1 / n, n) >= 0.02


@pytest.mark.parametrize("beta", [1.0, 0.3, 1 / 15])
def test_n_from_beta_is_the_bon_that_the_kl_optimum_matches(beta):
    """The converse: at a given β (0.3 gives a non-integer N = 13/3), π_BoN with N = n_from_beta(β) is the
    optimum (TV ≤ 2e-3), and N ± 1 is not (≥ 0.02)."""
    logp, rewards = _near_continuous_support()
    n = bon.n_from_beta(beta)
    assert _tv_optimum_to_bon(logp, rewards, beta, n) <= 2e-3
    assert _tv_optimum_to_bon(logp, rewards, beta, n + 1) >= 0.02
    if n - 1 > 1:
        assert _tv_optimum_to_bon(logp, rewards, beta, n - 1) >= 0.02


@pytest.mark.parametrize("beta", [0, -0.5])
def test_n_from_beta_rejects_non_positive(beta):
    with pytest.raises(ValueError):
        bon.n_from_beta(beta)


@pytest.mark.parametrize("n", [1, 0.5, -2])
def test_beta_from_n_rejects_n_le_1(n):
    with pytest.raises(ValueError):
        bon.beta_from_n(n)


def test_analytic_values():
    assert bon.kl_bon_analytic(1) == 0.0
    assert bon.kl_bon_analytic(2) == pytest.approx(math.log(2) - 0.5, abs=1e-15)
    assert bon.kl_bon_analytic(4) == pytest.approx(math.log(4) - 0.75, abs=1e-15)
    assert bon.win_rate_bon_analytic(1) == 0.5
    assert bon.win_rate_bon_analytic(4) == pytest.approx(0.8)


def test_exact_bon_kl_and_win_rate_approach_analytic_on_a_fine_continuous_support():
    """K = 4000 distinct rewards with max mass ~1e-3: the exact BoN KL sits just below log N − (N−1)/N and the
    exact win rate vs one reference draw is N/(N+1) (ties impossible); both to within O(max mass)."""
    g = seeded(11)
    logp = torch.log_softmax(torch.randn(4000, generator=g, dtype=torch.float64) * 0.5, -1)
    rewards = torch.randn(4000, generator=g, dtype=torch.float64)
    f_le, f_lt = bon.reward_cdfs(logp, rewards)
    for n in (2, 4, 16):
        lp = bon.bon_log_probs(logp, rewards, n)
        kl = bon.kl(lp, logp).item()
        assert kl <= bon.kl_bon_analytic(n) + 1e-9
        assert kl == pytest.approx(bon.kl_bon_analytic(n), abs=1e-2)
        win = float((lp.exp() * 0.5 * (f_le + f_lt)).sum())
        assert win == pytest.approx(bon.win_rate_bon_analytic(n), abs=1e-2)


# --------------------------------------------------------------------------- KL-regularised optimum


@pytest.mark.parametrize("beta", [0.05, 1 / 3, 2.0])
def test_kl_regularised_optimum(beta):
    logp, rewards = _random_support(30, ties=True, seed=21, batch=(2,))
    lp = bon.kl_regularised_optimum_log_probs(logp, rewards, beta)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)
    # ∝ π_ref·exp(r/β): log π* − log π_ref − r/β is one constant per row
    resid = lp - logp - rewards / beta
    assert (resid.max(-1).values - resid.min(-1).values).max().item() < 1e-10


# --------------------------------------------------------------------------- BoN from a pool of reference samples


@pytest.mark.parametrize("beta, n", [
    (1 / 7, 8), (0.1428571, 8), (0.142857, 8), (0.14285714285714285, 8), (1 / 3, 4), (0.3333333, 4), (0.333, None),
    (0.5, 3), (1.0, 2), (0.005, 201), (0.00497, None), (0.15, None), (0.3, None), (2.0, None), (0.0, None),
    (-0.5, None), (float("nan"), None), (float("inf"), None),
])
def test_whole_n_takes_a_beta_within_a_relative_1e_4_of_one_over_n_minus_one(beta, n):
    assert bon.whole_n(beta) == n
    if n is not None:  # the bar is relative: just inside and just outside 1e-4 of 1/(N − 1)
        exact = 1.0 / (n - 1)
        assert bon.whole_n(exact * (1 + 0.99e-4)) == n and bon.whole_n(exact * (1 - 0.99e-4)) == n
        assert bon.whole_n(exact * (1 + 1.01e-4)) is None and bon.whole_n(exact * (1 - 1.01e-4)) is None
