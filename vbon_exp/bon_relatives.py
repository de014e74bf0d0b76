"""Exact distributions of BoN's inference-time relatives on an enumerated support, and their KL on a pool's reward
levels: pure functions on tensors, below the tasks (the synthetic oracle's exact curves read them) and the objectives
(vbon_exp/objectives/soft_bon.py, best_of_poisson.py evaluate with them).

- Soft BoN (Verdun, Oesterling, Lakkaraju & Calmon 2025, *Soft Best-of-n Sampling for Model Alignment*,
  arXiv:2505.03156): N π_ref samples, sample i kept with probability softmax(r_i/λ).
- Best-of-Poisson (Khalaf, Verdun, Oesterling, Lakkaraju & Calmon 2025, *Inference-Time Reward Hacking in Large
  Language Models*, arXiv:2506.19248, BoP): a sample count drawn per query from a Poisson distribution of parameter
  μ, then BoN at it. We take N = 1 + K, K ~ Poisson(μ) (N = 0 would keep nothing), so E[N] = 1 + μ; the kept
  sample's quantile then has density (1 + μu)·e^{μ(u − 1)}.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vbon_exp import bon

# --------------------------------------------------------------------------- soft BoN

MAX_NODES = 2_000_000


def soft_bon_log_probs(logp_ref: torch.Tensor, rewards: torch.Tensor, n: float, lam: float,
                       step: float = 0.05) -> torch.Tensor:
    """Exact log π_soft(y) over an enumerated support [..., K]. With z(y) = exp(r(y)/λ) and 1/x = ∫_0^∞ e^(−t·x) dt,
        π_soft(y) = N·π_ref(y)·z(y)·∫_0^∞ e^(−t·z(y))·M(t)^(N−1) dt,   M(t) = E_{π_ref}[e^(−t·z(Y))],
    by Simpson's rule in u = log t with nodes `step` apart, over the range where the integrand lives: from
    e^u·z_max = e^−30 to e^u·z_min = e^5 (the integrand is smooth in log t: nodes 0.05 apart agree with 0.002 apart to
    1e-15 on the synthetic task; tests/test_inference_relatives.py checks it against enumerating every N-tuple)."""
    logp = logp_ref.to(torch.float64)
    log_z = (rewards.to(torch.float64) - rewards.to(torch.float64).amax(-1, keepdim=True)) / lam  # ≤ 0: z ≤ 1
    finite = torch.where(logp > -math.inf, log_z, torch.zeros_like(log_z))
    u_lo, u_hi = -30.0, float(5.0 - finite.min())
    nodes = int(math.ceil((u_hi - u_lo) / step / 2)) * 2 + 1
    if nodes > MAX_NODES:  # the range is the reward spread / λ: a λ this small is BoN to every digit that counts
        raise ValueError(f"soft BoN's exact distribution at λ = {lam:g} needs {nodes:,} quadrature nodes (the reward "
                         f"spread / λ = {u_hi - 5:.0f} nats): use a larger objective.lam, or BoN itself (λ → 0)")
    u = torch.linspace(u_lo, u_hi, nodes, dtype=torch.float64)
    h = (u_hi - u_lo) / (nodes - 1)
    simpson = torch.ones(nodes, dtype=torch.float64)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    log_w = torch.log(simpson * h / 3.0) + u  # dt = e^u du
    log_m = _log_laplace(logp, log_z, u)  # [..., T]: log M(e^u)
    out = torch.empty_like(logp)
    block = _block(logp, nodes)
    for lo in range(0, logp.shape[-1], block):  # [..., block, T] at a time
        lz = log_z[..., lo:lo + block, None]
        terms = lz - torch.exp(u + lz) + (n - 1.0) * log_m[..., None, :] + log_w
        out[..., lo:lo + block] = torch.logsumexp(terms, dim=-1)
    return math.log(n) + logp + out


def _block(logp: torch.Tensor, nodes: int) -> int:
    """Support entries per block so that a block's [..., block, T] table holds about 2^23 floats."""
    rows = max(1, logp[..., 0].numel())
    return max(1, (1 << 23) // (rows * nodes))


def _log_laplace(logp: torch.Tensor, log_z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """log M(t) = log E_{π_ref}[e^(−t·z)] at t = e^u: [..., T] (t·z as exp(u + log z): no inf·0)."""
    parts = []
    block = _block(logp, logp.shape[-1])
    for lo in range(0, u.shape[0], block):
        exponent = torch.exp(log_z[..., :, None] + u[lo:lo + block])  # [..., K, block]
        parts.append(torch.logsumexp(logp[..., :, None] - exponent, dim=-2))
    return torch.cat(parts, dim=-1)


# --------------------------------------------------------------------------- Best-of-Poisson
# With N = 1 + Poisson(μ), the probability generating function of N is G(u) = E[u^N] = u·e^{μ(u − 1)}. BoN at N lands
# on a reward level with P(r ≤ level) = F, P(r < level) = F⁻ with probability F^N − F⁻^N (vbon_exp.bon.bon_log_probs),
# so the Poisson mixture lands there with probability G(F) − G(F⁻): a closed form, ties included. For continuous
# rewards the quantile u = F(r) of the kept sample has density G'(u) = (1 + μu)·e^{μ(u − 1)} (Khalaf et al. 2025).


def poisson_log_pmf(mu: float, n: torch.Tensor) -> torch.Tensor:
    """log P(N = n) for N = 1 + Poisson(μ), n ≥ 1 (float64; μ = 0: N = 1 surely)."""
    n = n.to(torch.float64)
    if mu == 0:
        return torch.where(n == 1, torch.zeros_like(n), torch.full_like(n, -math.inf))
    return -mu + (n - 1.0) * math.log(mu) - torch.lgamma(n)


def _log_pgf(log_u: torch.Tensor, mu: float) -> torch.Tensor:
    """log G(u) = log u + μ(u − 1)."""
    return log_u + mu * (torch.exp(log_u) - 1.0)


def _log_pgf_step(log_f: torch.Tensor, log_q: torch.Tensor, mu: float) -> torch.Tensor:
    """log(G(F) − G(F⁻)) with F⁻ = F − q, from log F and log q, without cancellation when q ≪ F:
    G(F⁻)/G(F) = (1 − q/F)·e^{−μq}, so log(G(F) − G(F⁻)) = log G(F) + log(1 − e^{log1p(−q/F) − μq})."""
    ratio = torch.exp(log_q - log_f).clamp(max=1.0)
    return _log_pgf(log_f, mu) + torch.log(-torch.expm1(torch.log1p(-ratio) - mu * torch.exp(log_q)))


def best_of_poisson_log_probs(logp_ref: torch.Tensor, rewards: torch.Tensor, mu: float) -> torch.Tensor:
    """Exact log π_BoP(y) over an enumerated support [..., K], ties included: the Poisson mixture Σ_n P(N = n)·π_BoN(n)
    in closed form, π_BoP(y) = π_ref(y)·(G(F) − G(F⁻))/q with q the π_ref mass of y's reward level (see above).
    μ = 0 is π_ref (N = 1)."""
    if not (mu >= 0 and math.isfinite(mu)):
        raise ValueError(f"Best-of-Poisson needs a finite μ ≥ 0, got {mu}")
    log_le, _, log_level = bon.log_reward_cdfs(logp_ref, rewards)
    return logp_ref.to(torch.float64) + best_of_poisson_log_ratio(log_le, log_level, mu)


def best_of_poisson_log_ratio(log_f: torch.Tensor, log_level: torch.Tensor, mu: float) -> torch.Tensor:
    """log(π_BoP/π_ref) = log((G(F) − G(F⁻))/q) from log F and the level's log-mass log q (bon.log_reward_cdfs):
    elementwise, so a curve over μ reuses one computation of the CDFs."""
    return _log_pgf_step(log_f, log_level, mu) - log_level


def best_of_poisson_log_density(u: torch.Tensor, mu: float) -> torch.Tensor:
    """log G'(u) = μ(u − 1) + log(1 + μu): the log density of the kept sample's quantile u ∈ [0, 1] (continuous
    rewards), i.e. log π_BoP/π_ref at a reward with F = u."""
    u = u.to(torch.float64)
    return mu * (u - 1.0) + torch.log1p(mu * u)


# Gauss–Legendre nodes on [−1, 1] for ∫ G' log G' over a continuous level: the integrand is analytic on [0, 1], and a
# pool's continuous levels are 1/M wide, so 16 nodes give it to round-off (tests/test_best_of_poisson.py checks one
# level spanning all of [0, 1] against a fine composite rule).
_GL_NODES, _GL_WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(16))


def kl_best_of_poisson_level_terms(q: torch.Tensor, atomic: torch.Tensor, mu: float) -> torch.Tensor:
    """Each reward level's term [..., L] of KL(π_BoP ‖ π_ref), from the π_ref masses q [..., L] of the levels in
    ascending order (Σ q = 1), as vbon_exp.pool_estimators.kl_bon_level_terms does for BoN: an `atomic` level (one
    reward value, ties) adds m·log(m/q) with m = G(F) − G(F⁻); any other level stands for a continuum of distinct
    rewards and adds ∫_{F⁻}^{F} G'(u)·log G'(u) du (Gauss–Legendre). Levels with q = 0 add 0."""
    q = q.to(torch.float64)
    f = torch.cumsum(q, dim=-1).clamp(max=1.0)
    f_lt = (f - q).clamp(min=0.0)
    pos = q > 0
    safe_q, safe_f = torch.where(pos, q, torch.ones_like(q)), torch.where(pos, f, torch.ones_like(f))
    log_mass = _log_pgf_step(torch.log(safe_f), torch.log(safe_q), mu)
    atom = torch.where(pos, torch.exp(log_mass) * (log_mass - torch.log(safe_q)), torch.zeros_like(q))
    u = f_lt[..., None] + 0.5 * (_GL_NODES + 1.0) * q[..., None]  # [..., L, 16]
    log_g = best_of_poisson_log_density(u, mu)
    continuous = 0.5 * q * (_GL_WEIGHTS * torch.exp(log_g) * log_g).sum(-1)
    return torch.where(atomic, atom, torch.where(pos, continuous, torch.zeros_like(q)))


def kl_best_of_poisson_levels(q: torch.Tensor, atomic: torch.Tensor, mu: float) -> torch.Tensor:
    """KL(π_BoP ‖ π_ref) on reward levels: the sum of `kl_best_of_poisson_level_terms` (≥ 0)."""
    return kl_best_of_poisson_level_terms(q, atomic, mu).sum(-1).clamp(min=0.0)
