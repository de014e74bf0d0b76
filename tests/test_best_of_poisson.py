"""Best-of-Poisson (vbon_exp/bon_relatives.py, vbon_exp/objectives/best_of_poisson.py): the closed-form exact
distribution against the Poisson mixture of BoN's exact distributions and against simulating the sampler; the
continuous density and the level KL against quadrature; the pool weights against averaging over every subset; the
pool estimates against the exact values on the default synthetic task at several seeds; `objective.mu=all`; the
settings' errors. Tolerances are stated per test; every draw is seeded, so each test is deterministic."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from conftest import build_synthetic, compose_config, run_point, seeded, shifted

from vbon_exp import bon
from vbon_exp.bon_relatives import (
    best_of_poisson_log_density,
    best_of_poisson_log_probs,
    kl_best_of_poisson_levels,
    poisson_log_pmf,
)
from vbon_exp.config import validate
from vbon_exp.errors import ConfigError
from vbon_exp.evaluation import measure
from vbon_exp.objectives.best_of_poisson import BestOfPoisson, pool_weights
from vbon_exp.reference import build_reference_cache
from vbon_exp.sampling import SamplingConfig
from vbon_exp.settings.objective_poisson import poisson_tail


def _support(k: int, seed: int, ties: bool):
    g = seeded(seed)
    logp = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), -1)
    rewards = (torch.randint(0, 3, (k,), generator=g) if ties else torch.randn(k, generator=g)).to(torch.float64)
    return logp, rewards


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("mu", [0.0, 0.7, 3.0, 12.0])
def test_exact_is_the_poisson_mixture_of_bon(mu, ties):
    """The closed form (G(F) − G(F⁻))/q against Σ_n P(N = n)·π_BoN(n) summed term by term (bon.bon_log_probs, itself
    checked against enumeration in tests/test_bon.py), n to 150 (the Poisson mass beyond is < 1e-60 at μ = 12).
    Tolerance 1e-12: both are finite sums in float64."""
    logp, rewards = _support(7, seed=int(10 * mu) + ties, ties=ties)
    ns = torch.arange(1, 151)
    weights = poisson_log_pmf(mu, ns).exp()
    mixture = sum(float(w) * bon.bon_log_probs(logp, rewards, int(n)).exp() for n, w in zip(ns, weights) if w > 0)
    exact = best_of_poisson_log_probs(logp, rewards, mu).exp()
    torch.testing.assert_close(exact, mixture, rtol=0, atol=1e-12)
    assert float(exact.sum()) == pytest.approx(1.0, abs=1e-12)
    if mu == 0:
        torch.testing.assert_close(exact, logp.exp(), rtol=0, atol=1e-15)


def test_exact_is_what_the_sampler_draws():
    """Simulate the sampler itself — K ~ Poisson(μ) by torch.poisson, N = 1 + K draws from π_ref, the best kept (the
    first drawn of the best on ties) — 400,000 times on a tied support: every reward level's frequency within 4 SE
    (binomial) of its exact mass. Seeded: deterministic; a correct sampler fails one of the 3 levels with chance
    < 2e-4."""
    mu, draws = 2.5, 400_000
    logp, rewards = _support(6, seed=3, ties=True)
    g = seeded(11)
    n = 1 + torch.poisson(torch.full((draws,), mu, dtype=torch.float64), generator=g).long()
    picks = torch.multinomial(logp.exp(), draws * int(n.max()), replacement=True, generator=g).view(draws, -1)
    valid = torch.arange(picks.shape[1])[None] < n[:, None]
    scores = torch.where(valid, rewards[picks], torch.full_like(rewards[picks], -math.inf))
    kept = picks.gather(1, scores.argmax(-1, keepdim=True)).squeeze(1)
    exact = best_of_poisson_log_probs(logp, rewards, mu).exp()
    for level in torch.unique(rewards):
        mass = float(exact[rewards == level].sum())
        freq = float((rewards[kept] == level).double().mean())
        assert abs(freq - mass) <= 4 * math.sqrt(mass * (1 - mass) / draws), (float(level), freq, mass)


def test_continuous_limit_is_the_density_and_the_level_kl_its_integral():
    """With many equally likely distinct rewards, π_BoP/π_ref at quantile u tends to G'(u) = (1 + μu)·e^{μ(u − 1)}
    (within 2e-3 at 20,000 responses: the atoms' O(μ²/K) effect); the continuous level KL of one level [0, 1] is
    ∫ G' log G' (a composite Simpson rule with 200,001 nodes, to 1e-9), and the density integrates to 1."""
    mu, k = 4.0, 20_000
    logp = torch.full((k,), -math.log(k), dtype=torch.float64)
    rewards = torch.randperm(k, generator=seeded(0)).to(torch.float64)
    ratio = (best_of_poisson_log_probs(logp, rewards, mu) - logp).exp()
    u = (rewards + 1) / k  # F(r) of each response
    torch.testing.assert_close(ratio, best_of_poisson_log_density(u, mu).exp(), rtol=2e-3, atol=0)
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    simpson = torch.ones_like(grid)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    simpson *= (grid[1] - grid[0]) / 3
    log_g = best_of_poisson_log_density(grid, mu)
    assert float((simpson * log_g.exp()).sum()) == pytest.approx(1.0, abs=1e-12)
    integral = float((simpson * log_g.exp() * log_g).sum())
    one_level = kl_best_of_poisson_levels(torch.ones(1, dtype=torch.float64), torch.tensor([False]), mu)
    assert float(one_level) == pytest.approx(integral, abs=1e-9)
    many = kl_best_of_poisson_levels(torch.full((512,), 1 / 512, dtype=torch.float64), torch.zeros(512, dtype=bool),
                                     mu)  # the continuum cut into a pool's 1/M pieces: the same integral
    assert float(many) == pytest.approx(integral, abs=1e-12)


def test_atomic_level_kl_is_the_exact_kl_with_ties():
    """Every level an atom: the level terms sum to the exact KL(π_BoP ‖ π_ref) of the tied support (1e-12)."""
    logp, rewards = _support(9, seed=5, ties=True)
    levels = torch.unique(rewards)
    q = torch.stack([logp.exp()[rewards == v].sum() for v in levels])
    for mu in (0.5, 3.0, 20.0):
        exact = bon.kl(best_of_poisson_log_probs(logp, rewards, mu), logp)
        got = kl_best_of_poisson_levels(q, torch.ones_like(q, dtype=torch.bool), mu)
        assert float(got) == pytest.approx(float(exact), abs=1e-12), mu


@pytest.mark.parametrize("mu", [0.0, 0.5, 1.5])
def test_pool_weights_are_the_mixture_of_subset_averages(mu):
    """The weights against brute force on a pool of M = 12: for each N ≤ M, the share of the N-subsets whose best is
    the k-th lowest, mixed by P(N = n | N ≤ M) (exact: 1e-12). A μ whose P(N > M) exceeds 1e-6 is refused."""
    m = 12
    p = poisson_log_pmf(mu, torch.arange(1, m + 1)).exp()
    p = p / p.sum()
    expected = torch.zeros(m, dtype=torch.float64)
    for n in range(1, m + 1):
        subsets = list(itertools.combinations(range(m), n))
        for subset in subsets:
            expected[max(subset)] += float(p[n - 1]) / len(subsets)
    torch.testing.assert_close(pool_weights(m, mu), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="not negligible"):
        pool_weights(m, 5.0)  # P(N > 12) = 2e-3


# --------------------------------------------------------------------------- estimates against the exact values

SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=5)
POOL_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def default_task(artifacts_dir):
    """The synthetic task at its defaults (conf/task/synthetic.yaml: init_std 0.1), as `python -m vbon_exp` runs it."""
    return build_synthetic(artifacts_dir, init_std=0.1)


def _cache(task, cache_dir, m, seed, purpose=None):
    return build_reference_cache(
        reference=task.reference, reward=task.reward, tokenizer=task.tokenizer, prompts=task.test_prompts, m=m,
        sampling=SAMPLING, seed=shifted(seed), cache_dir=cache_dir,
        key_parts={"reference": task.fingerprint["reference"], "reward": task.fingerprint["reward"],
                   **({"purpose": purpose} if purpose else {})},
        eos_id=task.eos_id, pad_id=task.pad_id, chunk_prompts=64, keep_texts=0)


@pytest.mark.parametrize("seed", POOL_SEEDS)
def test_pool_estimates_are_within_3_se_of_the_exact_values(seed, default_task, tmp_path_factory):
    """`objective=best_of_poisson objective.mu=3` on the default synthetic task, from a pool of M = 256 per prompt (the
    default eval.bon_pool_m) and a test cache of 512 (the defaults), bootstrap B = 200, at three seeds: reward and win
    rate within 3 of their bootstrap SEs of the exact values (unbiased U-statistics: the pool and the test cache are
    disjoint draws). The KL is a plug-in: untied pool samples stand for a continuum, whose KL C (the continuous-reward
    value) is at least the exact KL and at least the plug-in (atoms only lower it: log-sum inequality), so the plug-in
    misses the exact KL by at most C − exact KL from above and by its SE-sized atom noise from below: the bar is
    3 SE + (C − exact KL). Measured at seeds 0, 1, 2: reward 0.6, 0.2, 1.9 SE; win rate 1.0, 0.2, 2.5 SE; KL 0.9,
    1.1, 0.9 SE (SE ≈ 5e-6). The seeds are fixed, so the test is deterministic; at another seed shift a correct
    estimator with a correct SE fails one of the 6 reward and win-rate comparisons with chance ≤ 6 × 0.27% (union
    bound)."""
    cache_dir = tmp_path_factory.mktemp(f"bop{seed}")
    caches = {"test": _cache(default_task, cache_dir, 512, seed),
              "bon_pool": _cache(default_task, cache_dir, 256, seed, "bon_pool")}
    (p,) = measure(BestOfPoisson([3.0]), default_task, caches, seed=shifted(seed), bootstrap=200)
    print({k: float(f"{p[k]:.6g}") for k in ("reward", "reward_se", "exact_reward", "win_rate", "win_rate_se",
                                       "exact_win_rate", "kl", "kl_se", "exact_kl")})
    assert p["mu"] == 3.0 and p["n"] == 4.0 and p["beta"] == pytest.approx(1 / 3) and p["poisson_tail"] < 1e-100
    for metric in ("reward", "win_rate"):
        assert 0 < p[f"{metric}_se"] < 0.1, (metric, p)
        assert abs(p[metric] - p[f"exact_{metric}"]) <= 3 * p[f"{metric}_se"], (metric, p)
    continuum = float(kl_best_of_poisson_levels(torch.ones(1, dtype=torch.float64), torch.tensor([False]), 3.0))
    assert p["kl"] <= continuum + 1e-12 and p["exact_kl"] <= continuum + 1e-12
    print(f"C − exact KL = {continuum - p['exact_kl']:.3g}")
    assert abs(p["kl"] - p["exact_kl"]) <= 3 * p["kl_se"] + (continuum - p["exact_kl"]), p
    assert p["kl_estimator"] == "plugin" and p["kl"] == p["kl_plugin"]


def test_a_task_without_an_oracle_gets_the_estimates_alone(default_task, tmp_path_factory):
    """A language-model task has no oracle: the same estimates, no exact columns (the pool path never reads one)."""
    from dataclasses import replace

    cache_dir = tmp_path_factory.mktemp("bop-no-oracle")
    caches = {"test": _cache(default_task, cache_dir, 64, 0), "bon_pool": _cache(default_task, cache_dir, 64, 0,
                                                                                   "bon_pool")}
    points = measure(BestOfPoisson([0.0, 3.0]), replace(default_task, oracle=None), caches, seed=shifted(0),
                     bootstrap=20)
    assert [p["mu"] for p in points] == [0.0, 3.0] and [p["n"] for p in points] == [1.0, 4.0]
    assert not any(key.startswith("exact_") for p in points for key in p)
    assert points[0]["kl"] == pytest.approx(0.0, abs=1e-12) and points[1]["reward"] > points[0]["reward"]


def test_mu_all_writes_one_line_per_mu(tmp_path):
    """mu=all from a pool of 32: μ = 0, 1, 3, 7 (E[N] = 1, 2, 4, 8), each line's N = 1 + μ and β = 1/μ; μ = 0 is
    π_ref (exact KL 0) and the exact gold columns are on every line."""
    first = run_point(tmp_path, tmp_path / "bop", "objective=best_of_poisson", "objective.mu=all",
                      "eval.bon_pool_m=32", "reference.m=32", "task.response_length=3")
    lines = [json.loads(line) for line in (tmp_path / "bop" / "results.jsonl").read_text().splitlines()]
    assert [line["mu"] for line in lines] == [0.0, 1.0, 3.0, 7.0] and first["mu"] == 0.0
    assert [line["n"] for line in lines] == [1.0, 2.0, 4.0, 8.0]
    assert [line["beta"] for line in lines] == [None, 1.0, pytest.approx(1 / 3), pytest.approx(1 / 7)]
    assert lines[0]["exact_kl"] == pytest.approx(0.0, abs=1e-12)
    assert all(line["objective"] == "best_of_poisson" and "exact_gold_reward" in line for line in lines)
    exact_kls = [line["exact_kl"] for line in lines]
    assert exact_kls == sorted(exact_kls)  # more samples on average, further from π_ref


def _validate(tmp_path, *overrides):
    return validate(compose_config(tmp_path / "out", ["objective=best_of_poisson", *overrides]))


def test_settings_derive_n_and_beta_from_mu_or_mu_from_beta(tmp_path):
    default = _validate(tmp_path).objective
    assert (default.mu, default.n, default.beta) == (3, 4.0, pytest.approx(1 / 3))
    from_beta = _validate(tmp_path, "objective.beta=0.14285714285714285").objective  # a β sweep's 1/7
    assert (from_beta.mu, from_beta.n) == (7.0, 8.0)
    zero = _validate(tmp_path, "objective.mu=0").objective
    assert (zero.n, zero.beta) == (1.0, None)
    every = _validate(tmp_path, "objective.mu=all")
    assert every.objective.mus(every.eval.bon_pool_m) == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0]


@pytest.mark.parametrize("overrides, match", [
    (["objective.mu=-1"], "objective.mu must be ≥ 0"),
    (["objective.mu=many"], "objective.mu must be a number ≥ 0 or 'all'"),
    (["objective.n=7"], "objective.n=7"),
    (["objective.mu=3", "objective.beta=0.5"], "disagree"),
    (["objective.mu=all", "objective.beta=0.5"], "drop objective.beta"),
    (["objective.mu=200"], r"objective.mu=200: P\(N > eval.bon_pool_m=256\)"),
    (["objective.mu=20", "eval.bon_pool_m=16"], "objective.mu=20"),
])
def test_settings_refuse_bad_values_naming_the_key(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        _validate(tmp_path, *overrides)


def test_poisson_tail_is_the_upper_tail():
    """P(N > m) against 1 − P(N ≤ m) from the pmf at the test's own sum (1e-14, what float64 keeps of a sum of 1),
    small tails to a relative 1e-12 against summing them term by term in exact rationals, and 0 for μ = 0."""
    from fractions import Fraction

    for mu, m in ((3.0, 2), (3.0, 4), (50.0, 60), (3.0, 20)):
        lower = math.fsum(math.exp(-mu + k * math.log(mu) - math.lgamma(k + 1)) for k in range(m))
        assert poisson_tail(mu, m) == pytest.approx(1 - lower, abs=1e-14)
    mu = Fraction(3)  # P(K ≥ 20) for K ~ Poisson(3) ≈ 7e-11: 1 − lower would keep ~4 digits of it
    term, upper = Fraction(1), Fraction(0)
    for k in range(1, 120):
        term *= mu / k
        upper += term if k >= 20 else 0
    assert poisson_tail(3.0, 20) == pytest.approx(float(upper) * math.exp(-3), rel=1e-12)
    assert poisson_tail(0.0, 1) == 0.0

