"""Estimators of BoN and its relatives from a pool of cached π_ref rewards: U-statistics over the pool's N-subsets (and
the subsets of the relatives' incomplete ones), the tie-aware KL, and BoN's per-sample log π_BoN/π_ref from a cache's
counts, pure functions of the sorted rewards of one prompt (vbon_exp/evaluation/bon_pool.py and
vbon_exp/bootstrap.py read them; the relatives' modules in vbon_exp/objectives/ add theirs)."""

from __future__ import annotations

import itertools
import math

import torch

from vbon_exp import bon
from vbon_exp.bon import log_binomial
from vbon_exp.settings.beta_n import bon_pool_ns  # noqa: F401  (re-exported)

# M i.i.d. π_ref samples of one prompt, sorted by reward r_(1) ≤ … ≤ r_(M): the average of a function h of the best of
# N over all C(M, N) subsets of the pool is a U-statistic (Hoeffding 1948), an unbiased estimate of E_{π_BoN(N)}[h] for
# every N ≤ M at once, with no new sampling. The best of a subset is its highest-ranked member, the k-th lowest of the
# pool in C(k−1, N−1) of the subsets; tied samples share one reward, so h of the best does not depend on how ties are
# ordered (BoN's tie-breaking never changes the chosen reward).


def bon_order_weights(m: int, ns) -> torch.Tensor:
    """[len(ns), M] weights w_k = C(k−1, N−1)/C(M, N), k = 1..M, one row per N: the probability that the best of N
    samples drawn without replacement from a pool of M is its k-th lowest. Each row sums to 1 (the hockey-stick
    identity). Log-binomials via lgamma: no huge integers (C(1024, 256) has 244 digits)."""
    ns = [int(n) for n in ns]
    if any(not 1 <= n <= m for n in ns):
        raise ValueError(f"BoN from a pool of M = {m} samples needs 1 ≤ N ≤ M, got {ns}")
    k = torch.arange(1, m + 1, dtype=torch.float64)
    rows = []
    for n in ns:
        top = k >= n  # C(k−1, N−1) = 0 below k = N
        kk = torch.where(top, k, torch.full_like(k, float(n)))
        log_w = torch.lgamma(kk) - math.lgamma(n) - torch.lgamma(kk - n + 1) - log_binomial(m, torch.tensor(n))
        rows.append(torch.where(top, torch.exp(log_w), torch.zeros_like(k)))
    return torch.stack(rows)


def bon_pool_mean(sorted_values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k·h(r_(k)) for each N: the U-statistic estimate of E_{π_BoN(N)}[h] from a pool.

    `sorted_values` [..., M] holds h(r_(k)) in ascending reward order; `weights` [len(ns), M] from bon_order_weights.
    Returns [..., len(ns)]."""
    return sorted_values.to(torch.float64) @ weights.T


def pool_levels(sorted_rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct reward levels of one prompt's sorted pool: (level id of each sample [M], samples per level [L])."""
    _, level, counts = torch.unique_consecutive(sorted_rewards, return_inverse=True, return_counts=True)
    return level, counts


def kl_bon_levels(q: torch.Tensor, atomic: torch.Tensor, n: float) -> torch.Tensor:
    """KL(π_BoN ‖ π_ref) from the π_ref masses q [..., L] of the reward levels in ascending order (Σ q = 1): the sum of
    `kl_bon_level_terms` (≥ 0)."""
    return kl_bon_level_terms(q, atomic, n).sum(-1).clamp(min=0.0)  # KL ≥ 0 (N = 1 leaves ±1e-16 round-off)


def kl_bon_level_terms(q: torch.Tensor, atomic: torch.Tensor, n: float) -> torch.Tensor:
    """Each reward level's term [..., L] of KL(π_BoN ‖ π_ref), from the π_ref masses q [..., L] of the levels in
    ascending order (Σ q = 1).

    With F = P(r ≤ level), F⁻ = F − q: the best of N lands on a level with probability F^N − F⁻^N. An `atomic` level is
    one reward value (ties): π_BoN/π_ref = (F^N − F⁻^N)/q on it (bon_log_probs), and it adds
        (F^N − F⁻^N)·log((F^N − F⁻^N)/q).
    Any other level stands for a continuum of distinct rewards (a pool sample that no other sample ties): π_BoN/π_ref
    = N·F(r)^(N−1) on it (§3), and it adds ∫_{F⁻}^{F} N u^(N−1)·log(N u^(N−1)) du = G(F) − G(F⁻) with
        G(u) = u^N·(log N + (N−1)·log u − (N−1)/N).
    With no atomic level this is G(1) − G(0) = log N − (N−1)/N, the continuous value. An atomic term never exceeds the
    continuous term over the same interval (log-sum inequality), so neither does the total. Levels with q = 0 add 0."""
    q = q.to(torch.float64)
    f = torch.cumsum(q, dim=-1).clamp(max=1.0)
    f_lt = (f - q).clamp(min=0.0)
    log_n = math.log(n)
    pos = q > 0
    safe_q, safe_f = torch.where(pos, q, torch.ones_like(q)), torch.where(pos, f, torch.ones_like(f))
    log_mass = log_level_mass(safe_f, safe_q, n)
    atom = torch.where(pos, torch.exp(log_mass) * (log_mass - torch.log(safe_q)), torch.zeros_like(q))

    def big_g(u: torch.Tensor) -> torch.Tensor:
        safe_u = torch.where(u > 0, u, torch.ones_like(u))
        value = torch.exp(n * torch.log(safe_u)) * (log_n + (n - 1) * torch.log(safe_u) - (n - 1) / n)
        return torch.where(u > 0, value, torch.zeros_like(u))

    continuous = big_g(f) - big_g(f_lt)
    return torch.where(atomic, atom, continuous)


def log_level_mass(f: torch.Tensor, q: torch.Tensor, n: float) -> torch.Tensor:
    """log(F^N − F⁻^N) with F⁻ = F − q (0 < q ≤ F): the log-probability that the best of N lands on a level of π_ref
    mass q whose CDF at the level is F, as N·log F + log(1 − (1 − q/F)^N), stable when q ≪ F (as bon_log_probs)."""
    return n * torch.log(f) + torch.log(-torch.expm1(n * torch.log1p(-(q / f).clamp(max=1.0))))


def log_bon_ratio_from_counts(less: torch.Tensor, less_equal: torch.Tensor, m, n: float) -> torch.Tensor:
    """The per-sample estimate of log π_BoN(y)/π_ref(y) from a cache of M π_ref rewards of y's prompt, by the counts
    of cached rewards below (<) and at or below (≤) r(y): BoN sampling's k1 term (it has no token probabilities).

    Where r(y) ties with cached rewards (q̂ > 0) y's reward level is an atom: π_BoN/π_ref = (F^N − F⁻^N)/q on it
    (bon.bon_log_probs), with the plug-ins F̂ = #≤/M, F̂⁻ = #</M, q̂ = F̂ − F̂⁻ of the cache. Elsewhere (no cached
    reward equals r(y): continuous rewards) it is log N + (N−1)·log F̂(r(y)) with the cache's F̂ = (#< + 1)/(M + 1)
    (bon.log_bon_ratio_estimate, §3). For a small atom (q ≪ F/N) the two agree to O(N·q/F); on a tied level the
    continuous formula is wrong by up to N-fold (log N − (N−1)/N exceeds the tie-aware KL)."""
    less, less_equal = less.to(torch.float64), less_equal.to(torch.float64)
    m = torch.as_tensor(m, dtype=torch.float64)
    continuous = bon.log_bon_ratio_estimate(bon.log_cdf_hat_from_counts(less, m), n)
    tied = less_equal > less
    f = torch.where(tied, less_equal / m, torch.ones_like(less))
    q = torch.where(tied, (less_equal - less) / m, torch.ones_like(less))
    atom = log_level_mass(f, q, n) - torch.log(q)
    return torch.where(tied, atom, continuous)


def subset_positions(m: int, n: int, budget: int, rows: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, S, N] positions of N-subsets of a pool of M, for a rule's U-statistic over them: the same S subsets
    in every row where C(M, N) ≤ `budget` (all of them: the complete U-statistic, no draw at all), else drawn afresh
    for each row (the bootstrap's replicates, so that their spread includes the draw's noise) as ⌈budget/⌊M/N⌋⌉
    random permutations of the pool, each cut into ⌊M/N⌋ disjoint blocks of N.

    Each block is a uniformly random N-subset, so the mean over blocks is an unbiased (incomplete) U-statistic; a
    permutation's blocks are Hoeffding's (1948) representation of the complete U-statistic as the average over
    permutations of the mean over disjoint blocks, so each sample is in as many blocks as any other (at N = 1 one
    permutation is the pool mean exactly)."""
    if not 1 <= n <= m:
        raise ValueError(f"N-subsets of a pool of M = {m} need 1 ≤ N ≤ M, got {n}")
    if math.comb(m, n) <= budget:
        every = torch.tensor(list(itertools.combinations(range(m), n)), dtype=torch.long)
        return every.expand(rows, -1, -1)
    blocks = m // n
    permutations = -(-budget // blocks)
    order = torch.rand(rows, permutations, m, generator=generator, dtype=torch.float64).argsort(dim=-1)
    return order[..., : blocks * n].reshape(rows, permutations * blocks, n)
