"""Estimators of BoN and its relatives from a pool of cached π_ref rewards: U-statistics over the pool's N-subsets and
the tie-aware KL, pure functions of the sorted rewards of one prompt (vbon_exp/evaluation/bon_pool.py and
vbon_exp/bootstrap.py read them; the relatives' modules in vbon_exp/objectives/ add theirs)."""

from __future__ import annotations

import math

import torch

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
    # atomic: log(F^N − F⁻^N) = N·log F + log(1 − (1 − q/F)^N), stable when q ≪ F (as in bon_log_probs)
    pos = q > 0
    safe_q, safe_f = torch.where(pos, q, torch.ones_like(q)), torch.where(pos, f, torch.ones_like(f))
    log_mass = n * torch.log(safe_f) + torch.log(-torch.expm1(n * torch.log1p(-(safe_q / safe_f).clamp(max=1.0))))
    atom = torch.where(pos, torch.exp(log_mass) * (log_mass - torch.log(safe_q)), torch.zeros_like(q))

    def big_g(u: torch.Tensor) -> torch.Tensor:
        safe_u = torch.where(u > 0, u, torch.ones_like(u))
        value = torch.exp(n * torch.log(safe_u)) * (log_n + (n - 1) * torch.log(safe_u) - (n - 1) / n)
        return torch.where(u > 0, value, torch.zeros_like(u))

    continuous = big_g(f) - big_g(f_lt)
    return torch.where(atomic, atom, continuous)


