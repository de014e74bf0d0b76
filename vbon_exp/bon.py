"""Best-of-N math: pure functions on tensors, no model code.

Notation follows Amini, Vieira, Ash & Cotterell, *Variational Best-of-N Alignment* (ICLR 2025), §3:
π_ref is the reference policy, r the reward, F_x(t) = P_{y'~π_ref(·|x)}(r(y') ≤ t) the reward CDF under π_ref,
N the number of BoN samples and β = 1/(N−1) the KL coefficient under which RL recovers π_BoN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from vbon_exp.settings.beta_n import WHOLE_N_RTOL, beta_from_n, n_from_beta, whole_n  # noqa: F401  (the (β, N) axis)

# --------------------------------------------------------------------------- N <-> β


def kl_bon_analytic(n: float) -> float:
    """KL(π_BoN ‖ π_ref) = log N − (N−1)/N for continuous rewards (§3; Beirami et al. 2024 show it bounds the
    discrete case from above)."""
    return math.log(n) - (n - 1.0) / n


def win_rate_bon_analytic(n: float) -> float:
    """P(a BoN sample's reward beats one reference sample's) = N/(N+1) for continuous rewards:
    the max of N i.i.d. uniforms beats an (N+1)-th with probability N/(N+1)."""
    return n / (n + 1.0)


# --------------------------------------------------------------------------- empirical CDF of cached rewards


def pad_sorted_rewards(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged per-prompt reward lists into a [P, M_max] table of sorted rewards padded with +inf.

    +inf padding keeps searchsorted counts right: no finite reward is ≥ +inf. Returns (table, lengths)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    table = torch.full((len(rows), int(lengths.max())), math.inf, dtype=torch.float64)
    for i, r in enumerate(rows):
        table[i, : len(r)] = torch.sort(r.to(torch.float64)).values
    return table, lengths


def _search(sorted_table: torch.Tensor, prompt_index: torch.Tensor, rewards: torch.Tensor, side: str) -> torch.Tensor:
    """searchsorted of each reward in its own prompt's row, one 1-D search per distinct prompt.

    Memory O(B), not O(B·M): gathering each pair's row first would build a [B, M] float64 copy (4 GB for
    B = 31k pairs against M = 16k cached rewards)."""
    prompt_index = prompt_index.long().to(sorted_table.device)
    values = rewards.to(device=sorted_table.device, dtype=sorted_table.dtype).reshape(-1)
    out = torch.empty(values.shape[0], dtype=torch.long, device=sorted_table.device)
    for p in torch.unique(prompt_index).tolist():
        sel = prompt_index == p
        out[sel] = torch.searchsorted(sorted_table[p], values[sel].contiguous(), side=side)
    return out


def count_less(sorted_table: torch.Tensor, prompt_index: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Number of cached rewards of each pair's prompt strictly below its reward (searchsorted, side='left')."""
    return _search(sorted_table, prompt_index, rewards, "left")


def count_less_equal(sorted_table: torch.Tensor, prompt_index: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Number of cached rewards of each pair's prompt at or below its reward (searchsorted, side='right')."""
    return _search(sorted_table, prompt_index, rewards, "right")


def log_cdf_hat(
    sorted_table: torch.Tensor, lengths: torch.Tensor, prompt_index: torch.Tensor, rewards: torch.Tensor
) -> torch.Tensor:
    """log F̂_x(r) with F̂ = (rank + 1)/(M + 1), rank = #{cached < r} (the seed code's searchsorted-left rule).

    The +1s make F̂ ∈ (0, 1] so log F̂ is always finite; F̂ is the CDF of the cache with the new sample
    itself included, the plug-in estimate of F_x used by the vBoN reward (§3, Eq. for L)."""
    rank = count_less(sorted_table, prompt_index, rewards).to(torch.float64)
    m = lengths.index_select(0, prompt_index.long()).to(torch.float64)
    return log_cdf_hat_from_counts(rank, m)


def log_cdf_hat_from_counts(less: torch.Tensor, m) -> torch.Tensor:
    """log F̂ = log((#{cached < r} + 1)/(M + 1)) from the count (log_cdf_hat; the bootstrap's resampled counts)."""
    return torch.log((less.to(torch.float64) + 1.0) / (m + 1.0))


def cdf_le(sorted_table, lengths, prompt_index, rewards) -> torch.Tensor:
    """Tie-aware empirical F(t) = P(r ≤ t) over the cache."""
    m = lengths.index_select(0, prompt_index.long()).to(torch.float64)
    return count_less_equal(sorted_table, prompt_index, rewards).to(torch.float64) / m


def cdf_lt(sorted_table, lengths, prompt_index, rewards) -> torch.Tensor:
    """Tie-aware empirical F⁻(t) = P(r < t) over the cache."""
    m = lengths.index_select(0, prompt_index.long()).to(torch.float64)
    return count_less(sorted_table, prompt_index, rewards).to(torch.float64) / m


def win_prob(sorted_table, lengths, prompt_index, rewards) -> torch.Tensor:
    """P(reward beats a cached reference reward), ties counted ½: F⁻(r) + ½·(F(r) − F⁻(r))."""
    lt = cdf_lt(sorted_table, lengths, prompt_index, rewards)
    le = cdf_le(sorted_table, lengths, prompt_index, rewards)
    return 0.5 * (lt + le)


def win_prob_from_counts(less: torch.Tensor, less_equal: torch.Tensor, m) -> torch.Tensor:
    """win_prob from the counts of cached rewards below (<) and at or below (≤) r: (less + ½·ties)/M."""
    return 0.5 * (less.to(torch.float64) + less_equal.to(torch.float64)) / m


# --------------------------------------------------------------------------- vBoN sequence rewards
# Both rewards equal β·log(π_BoN(y)/π_ref(y)) up to a constant, so maximising E_π[reward] − β·KL(π‖π_ref)
# has π_BoN as its optimum (§3): that is minimising KL(π‖π_BoN).


def log_binomial(n: int, i: torch.Tensor) -> torch.Tensor:
    """log C(n, i) via lgamma, elementwise over i."""
    n_t = torch.tensor(float(n), dtype=torch.float64)
    i = i.to(torch.float64)
    return torch.lgamma(n_t + 1) - torch.lgamma(i + 1) - torch.lgamma(n_t - i + 1)


def log_bon_ratio_exact(log_f: torch.Tensor, logp_ref: torch.Tensor, n: int) -> torch.Tensor:
    """log(π_BoN(y)/π_ref(y)) = log Σ_{i=1..N} C(N,i) F^(N−i) π_ref(y)^(i−1), distinct rewards (§3, Eq. for π_BoN).

    Here F = P(r < r(y)) (or the cache's F̂ as a plug-in). Computed in log space with logsumexp, so tiny
    π_ref(y) and F near 0 stay finite; F = 0 makes every term but i = N vanish (exp(−inf) = 0)."""
    if int(n) != n or n < 1:
        raise ValueError(f"the exact BoN ratio needs an integer N ≥ 1, got {n}")
    n = int(n)
    log_f = log_f.to(torch.float64)
    logp_ref = logp_ref.to(torch.float64)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    # terms[..., i-1] = log C(N,i) + (N−i)·log F + (i−1)·log π_ref; (N−i)·log F with N−i = 0 must be 0 even at F = 0
    f_power = torch.where((n - i) == 0, torch.zeros_like(log_f[..., None]), (n - i) * log_f[..., None])
    terms = log_binomial(n, i) + f_power + (i - 1) * logp_ref[..., None]
    return torch.logsumexp(terms, dim=-1)


def vbon_reward_l1(log_f_hat: torch.Tensor) -> torch.Tensor:
    """The `l1` vBoN reward: log F̂_x(r(y)) — β·log(π_BoN/π_ref) for continuous rewards with the constant
    β·log N dropped, since β(N−1) = 1 (§3, the bound L used in the experiments)."""
    return log_f_hat


def vbon_reward_exact(log_f_hat: torch.Tensor, logp_ref: torch.Tensor, n: int, scale: str = "beta") -> torch.Tensor:
    """The `exact` vBoN reward: β·log Σ_{i=1..N} C(N,i) F̂^(N−i) π_ref(y)^(i−1), β = 1/(N−1).

    `scale="seed"` multiplies by 1/N instead, as the seed code (rycolab/vbon) does; its RL optimum is then
    π_ref^(1/N)·π_BoN^((N−1)/N) rather than π_BoN. Kept only for faithful reproduction."""
    if scale == "beta":
        coef = 1.0 / (n - 1.0)
    elif scale == "seed":
        coef = 1.0 / n
    else:
        raise ValueError(f"objective.exact_scale must be 'beta' or 'seed', got {scale!r}")
    return coef * log_bon_ratio_exact(log_f_hat, logp_ref, n)


# --------------------------------------------------------------------------- reward transforms
# The sequence reward an RL objective maximises with KL coefficient β, as a function of what a scored rollout
# gives: the raw reward r(y), log F̂_x(r(y)) from the reference cache, log π_ref(y|x), and N. Objectives pick one by
# name (vbon: `log_cdf` for bound=l1, `exact` for bound=exact; kl_rl: `objective.transform`, `identity` by default).
# With a transform Φ of the calibrated reward F(r), the RL optimum is π ∝ π_ref·exp(Φ/β) (the synthetic oracle's
# `transform_optimum_log_probs` computes it with the exact F).


@dataclass(frozen=True)
class TransformInputs:
    rewards: torch.Tensor  # [B] r(y)
    log_f_hat: torch.Tensor | None = None  # [B] log F̂_x(r(y)) (None when no reference cache is read)
    logp_ref: torch.Tensor | None = None  # [B] log π_ref(y|x), float64
    n: float | None = None  # the BoN N of the objective
    exact_scale: str = "beta"  # the exact bound's scale (vbon_reward_exact)
    t: float = 1.0  # the exponent of `exp_cdf` (exp(t·F̂))


REWARD_TRANSFORMS: dict[str, Callable[[TransformInputs], torch.Tensor]] = {}
# transforms that read the reference cache's F̂ (the objective then needs the train cache)
TRANSFORMS_NEEDING_CDF: set[str] = set()


def register_transform(name: str, needs_cdf: bool = False):
    def add(fn):
        REWARD_TRANSFORMS[name] = fn
        if needs_cdf:
            TRANSFORMS_NEEDING_CDF.add(name)
        return fn

    return add


@register_transform("identity")
def transform_identity(x: TransformInputs) -> torch.Tensor:
    """r(y): standard KL-regularised RL, optimum π* ∝ π_ref·exp(r/β) (§2)."""
    return x.rewards.double()


@register_transform("log_cdf", needs_cdf=True)
def transform_log_cdf(x: TransformInputs) -> torch.Tensor:
    """log F̂_x(r(y)): vBoN's `l1` bound (§3); with β = 1/(N−1) the optimum is π_BoN."""
    return vbon_reward_l1(x.log_f_hat)


@register_transform("exact", needs_cdf=True)
def transform_exact(x: TransformInputs) -> torch.Tensor:
    """β·log Σ_i C(N,i) F̂^(N−i) π_ref^(i−1): vBoN's exact bound (§3), N rounded as `vbon_reward_exact` needs."""
    return vbon_reward_exact(x.log_f_hat, x.logp_ref.cpu(), int(x.n), x.exact_scale)


# Calibrated reward transforms (InfAlign's calibrate-and-transform RL, CTRL: Balashankar et al. 2024, "InfAlign:
# Inference-aware language model alignment", arXiv:2412.19792): calibrate the reward to its quantile under π_ref,
# F_x(r(y)) ∈ [0, 1] (the cache's F̂ here), then apply a transform Φ. `log_cdf` above is Φ = log (vBoN's l1 reward;
# with β = 1/(N−1) the optimum is π_BoN, Amini et al. 2025 §3); InfAlign's exponential transform Φ(u) = exp(t·u)
# aims at best-of-N win rate for t > 0 (worst-of-N for t < 0); Φ = identity on F is the plain calibrated reward.


@register_transform("cdf", needs_cdf=True)
def transform_cdf(x: TransformInputs) -> torch.Tensor:
    """F̂_x(r(y)): the calibrated reward itself (InfAlign: Φ = identity on the quantile); optimum
    π ∝ π_ref·exp(F/β)."""
    return torch.exp(x.log_f_hat.to(torch.float64))


@register_transform("exp_cdf", needs_cdf=True)
def transform_exp_cdf(x: TransformInputs) -> torch.Tensor:
    """exp(t·F̂_x(r(y))): InfAlign's exponential calibrated transform (Φ(u) = exp(t·u)); optimum
    π ∝ π_ref·exp(exp(t·F)/β)."""
    return torch.exp(x.t * torch.exp(x.log_f_hat.to(torch.float64)))


def log_bon_ratio_estimate(log_f_hat: torch.Tensor, n: float) -> torch.Tensor:
    """log π_BoN/π_ref ≈ log N + (N−1)·log F̂(r(y)) (continuous rewards): the per-sample k1 term for BoN,
    whose token probabilities do not exist."""
    return math.log(n) + (n - 1.0) * log_f_hat.to(torch.float64)


# --------------------------------------------------------------------------- exact BoN on a finite support


def log_reward_cdfs(logp_ref: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact log F(r(y)) = log P(r ≤ r(y)), log F⁻(r(y)) = log P(r < r(y)) and the log-mass of y's reward level
    log P(r = r(y)) under π_ref, over an enumerated support [..., K].

    All in log space (logcumsumexp; a per-level logsumexp), so responses whose π_ref underflows in linear
    space keep finite, exact values."""
    logp = logp_ref.to(torch.float64)
    shape = logp.shape
    logp2, r2 = logp.reshape(-1, shape[-1]), rewards.reshape(-1, shape[-1])
    order = torch.argsort(r2, dim=-1)
    r_sorted = torch.gather(r2, -1, order).contiguous()
    lcum = torch.logcumsumexp(torch.gather(logp2, -1, order), dim=-1)
    lcum = torch.cat([torch.full_like(lcum[:, :1], -math.inf), lcum], dim=-1)  # lcum[k]: log mass of the k lowest
    lt_idx = torch.searchsorted(r_sorted, r2.contiguous(), side="left")  # also the id of y's reward level
    le_idx = torch.searchsorted(r_sorted, r2.contiguous(), side="right")
    log_le, log_lt = torch.gather(lcum, -1, le_idx), torch.gather(lcum, -1, lt_idx)
    # log P(r = r(y)): a logsumexp over each level, as scatter ops (levels are keyed by lt_idx)
    level_max = torch.full_like(logp2, -math.inf).scatter_reduce(-1, lt_idx, logp2, reduce="amax")
    shifted = torch.exp(logp2 - torch.gather(level_max, -1, lt_idx))
    level_sum = torch.zeros_like(logp2).scatter_add(-1, lt_idx, shifted)
    log_level = torch.gather(level_max + torch.log(level_sum), -1, lt_idx)
    return log_le.reshape(shape).clamp(max=0.0), log_lt.reshape(shape).clamp(max=0.0), log_level.reshape(shape)


def reward_cdfs(logp_ref: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact F(r(y)) = P(r ≤ r(y)) and F⁻(r(y)) = P(r < r(y)) under π_ref over an enumerated support [..., K]."""
    log_le, log_lt, _ = log_reward_cdfs(logp_ref, rewards)
    return log_le.exp(), log_lt.exp()


def bon_log_probs(logp_ref: torch.Tensor, rewards: torch.Tensor, n: float) -> torch.Tensor:
    """Exact log π_BoN(y) over an enumerated support [..., K], ties included.

    With ties broken uniformly (or by first index: the two agree), the winner's reward level v is reached with
    probability F(v)^N − F⁻(v)^N and shared among the tied responses in proportion to π_ref. With q = F − F⁻ the
    level's mass,
        π_BoN(y) = π_ref(y)·(F^N − F⁻^N)/q = π_ref(y)·Σ_{i=1..N} C(N,i) F⁻^(N−i) q^(i−1),
    which for distinct rewards (q = π_ref(y)) is the paper's Σ_{i=1..N} C(N,i) F⁻^(N−i) π_ref(y)^i (§3)."""
    if int(n) == n:
        _, log_lt, log_level = log_reward_cdfs(logp_ref, rewards)
        return logp_ref.to(torch.float64) + log_bon_ratio_exact(log_lt, log_level, int(n))
    return bon_log_probs_closed_form(logp_ref, rewards, n)  # real N (e.g. N = 1/β + 1 for a β not 1/whole)


def bon_log_probs_closed_form(logp_ref: torch.Tensor, rewards: torch.Tensor, n: float) -> torch.Tensor:
    """`bon_log_probs` for any real N ≥ 1 in O(K) memory: the closed form (F^N − F⁻^N)/q with F = F⁻ + q, as
    N·log F + log(1 − (1 − q/F)^N) − log q, where log(1 − q/F) = log1p(−exp(log q − log F)) (the binomial sum's
    [..., K, N] table does not fit for large whole N: 4 GB at N = 2^14 on the synthetic task)."""
    if n < 1:
        raise ValueError(f"BoN needs N ≥ 1, got {n}")
    _, log_lt, log_level = log_reward_cdfs(logp_ref, rewards)
    log_f = torch.logaddexp(log_lt, log_level)
    return logp_ref.to(torch.float64) + bon_log_ratio_closed_form(log_f, log_level, n)


def bon_log_ratio_closed_form(log_f: torch.Tensor, log_level: torch.Tensor, n: float) -> torch.Tensor:
    """log(π_BoN/π_ref) = log((F^N − F⁻^N)/q) from log F = log P(r ≤ r(y)) and log q = log P(r = r(y))
    (log_reward_cdfs), for any real N ≥ 1: elementwise, so a curve over N reuses one computation of the CDFs."""
    log_keep = torch.log1p(-torch.exp(log_level - log_f).clamp(max=1.0))
    return n * log_f + torch.log(-torch.expm1(n * log_keep)) - log_level


def kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) = Σ p (log p − log q) over the last dim; terms with p = 0 contribute 0."""
    p = logp.exp()
    diff = torch.where(p > 0, logp - logq, torch.zeros_like(logp))
    return (p * diff).sum(-1)


def kl_regularised_optimum_log_probs(logp_ref: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """log π*(y) for π* ∝ π_ref(y)·exp(r(y)/β), the optimum of E[r] − β·KL(π‖π_ref) (§2).

    The rewards are shifted by their maximum first (the same distribution): at small β, r/β ≫ |log π_ref| would
    otherwise swamp π_ref's digits (at r/β ~ 1e13 a float64 keeps ~1e-3 of the sum), as the exact frontier's
    bisection towards the greedy policy needs (SyntheticOracle.frontier_at_kl)."""
    rewards = rewards.to(torch.float64)
    logits = logp_ref.to(torch.float64) + (rewards - rewards.max(-1, keepdim=True).values) / beta
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)
