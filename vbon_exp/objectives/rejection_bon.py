"""`objective=rejection_bon`: rejection-style best-of-N with a reward threshold τ: draw up to N samples from π_ref and
keep the first whose reward reaches τ; when none of the N does, keep the best of them. Far fewer than N draws when
τ is easy, BoN when it is out of reach. τ is a quantile of π_ref's reward distribution of each prompt
(`objective.quantile`, default 0.9: τ_x = F_x⁻¹(q), estimated from the test cache, exact on the synthetic task) or
one reward value for every prompt (`objective.threshold`). Nothing is trained.

Exact distribution. With Q = P(r < τ) under π_ref, a response that reaches τ is kept when all draws before it
failed: π(y) = π_ref(y)·(1 + Q + … + Q^(N−1)) = π_ref(y)·(1 − Q^N)/(1 − Q); one below τ is kept only when all N fail
and it is their best: π(y) = π_BoN(N)(y) (ties shared as BoN shares them).

Evaluation from the BoN pool (vbon_exp/evaluation/pooled_rule.py), every N at once with `objective.n=all`. Over a
pool of M with P samples at or above τ, a random N-subset in random order keeps each passing sample with probability
Σ_j C(P−1, j−1)·C(M−P, N−j)/(j·C(M, N)) (it is one of the subset's j passing samples, and the first of them), and
the k-th lowest failing sample with C(k−1, N−1)/C(M, N) (all N fail, and it is their best): the complete
U-statistic, unbiased for the kept sample's reward and win rate. The KL is the plug-in on the pool's levels:
(1 − Q^N)·log((1 − Q^N)/(1 − Q)) plus BoN's tie-aware terms below τ."""

from __future__ import annotations

import math

import torch

from vbon_exp import bon
from vbon_exp.evaluation.pooled_rule import PooledRule
from vbon_exp.objectives.base import Objective, RunContext, register_objective
from vbon_exp.pool_estimators import kl_bon_level_terms
from vbon_exp.settings.objective import RejectionBoNConfig


def rejection_bon_log_probs(logp_ref: torch.Tensor, rewards: torch.Tensor, n: int,
                            tau: torch.Tensor) -> torch.Tensor:
    """Exact log π(y) over an enumerated support [..., K] for thresholds τ [...] (module docstring)."""
    logp = logp_ref.to(torch.float64)
    passing = rewards.to(torch.float64) >= tau.to(torch.float64)[..., None]
    log_q = torch.logsumexp(logp.masked_fill(passing, -math.inf), dim=-1, keepdim=True)  # log Q
    q = log_q.exp()
    # log((1 − Q^N)/(1 − Q)) = log Σ_{k<N} Q^k, which is log N when Q = 1 (then nothing passes anyway)
    log_ratio = torch.where(q < 1.0, torch.log(-torch.expm1(n * log_q)) - torch.log1p(-q.clamp(max=1.0 - 1e-300)),
                            torch.full_like(q, math.log(n)))
    return torch.where(passing, logp + log_ratio, bon.bon_log_probs(logp, rewards, n))


def exact_thresholds(oracle, quantile: float | None, threshold: float | None) -> torch.Tensor:
    """τ per prompt [P]: the absolute threshold, or the smallest reward level whose exact CDF reaches the quantile."""
    rewards = oracle.rewards
    if threshold is not None:
        return torch.full(rewards.shape[:-1], float(threshold), dtype=torch.float64)
    f_le, _ = bon.reward_cdfs(oracle.ref_log_probs, rewards)
    reached = torch.where(f_le >= quantile - 1e-12, rewards, torch.full_like(rewards, math.inf))
    return reached.min(-1).values


def passing_weight(m: int, p: torch.Tensor, n: int) -> torch.Tensor:
    """Σ_j C(P−1, j−1)·C(M−P, N−j)/(j·C(M, N)) for each P [R]: the chance that one given passing sample is kept."""
    j = torch.arange(1, n + 1, dtype=torch.float64)
    p = p.to(torch.float64)[:, None]
    valid = (j <= p) & (n - j <= m - p)
    log_terms = (_log_comb(p - 1, j - 1) + _log_comb(m - p, n - j) - torch.log(j) - bon.log_binomial(m, torch.tensor(n)))
    return torch.where(valid, log_terms.exp(), torch.zeros_like(log_terms)).sum(-1)


def _log_comb(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log C(a, b) for real arrays where 0 ≤ b ≤ a (elsewhere a finite placeholder: masked by the caller)."""
    a, b = torch.broadcast_tensors(a, b)
    ok = (b >= 0) & (b <= a)
    a, b = torch.where(ok, a, torch.ones_like(a)), torch.where(ok, b, torch.zeros_like(b))
    return torch.lgamma(a + 1) - torch.lgamma(b + 1) - torch.lgamma(a - b + 1)


class RejectionBoN(PooledRule):
    """Rejection BoN from the BoN pool: the complete U-statistic, the plug-in KL."""

    def __init__(self, ns: list[int], quantile: float | None, threshold: float | None):
        super().__init__(ns)
        self.quantile, self.threshold = quantile, threshold
        self.tau: torch.Tensor | None = None  # [P] the thresholds of this evaluation

    def columns(self) -> dict:
        return {"threshold": self.threshold} if self.threshold is not None else {"quantile": self.quantile}

    def prepare(self, ctx) -> None:
        """τ per prompt: the threshold, or the quantile of the test cache's π_ref rewards (disjoint from the pool)."""
        cache = ctx.test_cache
        if self.threshold is not None:
            self.tau = torch.full((cache.sorted_rewards.shape[0],), float(self.threshold), dtype=torch.float64)
            return
        position = (torch.ceil(self.quantile * cache.lengths.to(torch.float64)) - 1).clamp(min=0).long()
        self.tau = cache.sorted_rewards.gather(1, position[:, None]).squeeze(1)

    def weights(self, values: torch.Tensor, n: int, prompt: int) -> torch.Tensor:
        r, m = values.shape
        passing = values >= self.tau[prompt]
        p = passing.sum(-1)
        rank = torch.arange(1, m + 1, dtype=torch.float64).expand(r, -1)  # sorted: failing samples come first
        failing = torch.where(rank >= n, torch.exp(_log_comb(rank - 1, torch.full_like(rank, n - 1.0))
                                                   - bon.log_binomial(m, torch.tensor(n))), torch.zeros_like(rank))
        return torch.where(passing, passing_weight(m, p, n)[:, None].expand(r, m), failing)

    def plugin_kl(self, level_values, mass, atomic, n, prompt) -> torch.Tensor:
        below = level_values < self.tau[prompt]
        q = (mass * below).sum(-1).clamp(max=1.0)
        pass_mass = -torch.expm1(n * torch.log(q.clamp(min=1e-300)))  # 1 − Q^N
        passing = torch.where(q < 1.0, pass_mass * (torch.log(pass_mass.clamp(min=1e-300)) - torch.log1p(-q)),
                              torch.zeros_like(q))
        bon_terms = (kl_bon_level_terms(mass, atomic, n) * below).sum(-1)
        return (passing + bon_terms).clamp(min=0.0)

    def exact_log_probs(self, oracle, n: int) -> torch.Tensor:
        return rejection_bon_log_probs(oracle.ref_log_probs, oracle.rewards, n,
                                       exact_thresholds(oracle, self.quantile, self.threshold))


@register_objective
class RejectionBoNObjective(Objective):
    name = "rejection_bon"
    config = RejectionBoNConfig

    def fit(self, ctx: RunContext) -> RejectionBoN:
        return RejectionBoN(self.cfg.ns(ctx.settings.eval.bon_pool_m), self.cfg.quantile, self.cfg.threshold)

    def target_log_probs(self, oracle):
        return None  # an inference-time method: no target to reach
