"""`objective=best_of_poisson`: Best-of-Poisson (Khalaf, Verdun, Oesterling, Lakkaraju & Calmon 2025, *Inference-Time
Reward Hacking in Large Language Models*, arXiv:2506.19248): per query, draw N = 1 + K π_ref samples, K ~ Poisson(μ),
and keep the best. μ = 0 is π_ref; E[N] = 1 + μ. Nothing is trained.

Exact distribution: the Poisson mixture of π_BoN(N), in closed form with ties
(vbon_exp.bon_relatives.best_of_poisson_log_probs).

Evaluation from the BoN pool (vbon_exp/evaluation/pooled_rule.py), every μ at once with `objective.mu=all`:
- reward and win rates: the U-statistic whose weights are the Poisson mixture of BoN's order weights,
  w_k = Σ_{n ≤ M} P(N = n | N ≤ M)·C(k−1, n−1)/C(M, n): unbiased for BoP with N truncated at the pool's size M (the
  settings refuse a μ with P(N > M) > 1e-6; results column `poisson_tail`);
- KL: the tie-aware plug-in on the pool's reward levels (vbon_exp.bon_relatives.kl_best_of_poisson_level_terms), as
  BoN's `kl_tie_aware`: a tied level an atom, an untied sample a continuum; bootstrapped like BoN's.
Each line's N is the mean sample count 1 + μ and β = 1/μ (vbon_exp/settings/objective_poisson.py), beside `mu`."""

from __future__ import annotations

import torch

from vbon_exp.bon_relatives import best_of_poisson_log_probs, kl_best_of_poisson_levels, poisson_log_pmf
from vbon_exp.evaluation.bon_pool import BON_POOL
from vbon_exp.evaluation.policy import EvalContext, PolicyPoint
from vbon_exp.evaluation.pooled_rule import PooledRule
from vbon_exp.objectives.base import Objective, RunContext, register_objective
from vbon_exp.pool_estimators import bon_order_weights
from vbon_exp.settings.objective_poisson import POISSON_TAIL_MAX, BestOfPoissonConfig, poisson_tail

# Sample counts whose Poisson probability is below e^−50 (2e-22) are left out of the mixture: the pmf is unimodal,
# so they are its two ends, together far below the P(N > M) ≤ 1e-6 the settings allow.
LOG_PMF_FLOOR = -50.0


def pool_weights(m: int, mu: float) -> torch.Tensor:
    """[M]: w_k = Σ_n P(N = n | N ≤ M)·C(k−1, n−1)/C(M, n), the chance that the pool's k-th lowest sample is the best
    of N ~ 1 + Poisson(μ) drawn without replacement from the pool (BoN's order weights mixed over N)."""
    tail = poisson_tail(mu, m)
    if tail > POISSON_TAIL_MAX:
        raise ValueError(f"Best-of-Poisson at μ = {mu:g} from a pool of M = {m}: P(N > M) = {tail:.2g} is not "
                         f"negligible (> {POISSON_TAIL_MAX:g})")
    log_p = poisson_log_pmf(mu, torch.arange(1, m + 1))
    kept = torch.nonzero(log_p > LOG_PMF_FLOOR).flatten()
    ns = torch.arange(int(kept.min()) + 1, int(kept.max()) + 2)
    p = torch.exp(log_p[ns - 1])
    return (p / p.sum()) @ bon_order_weights(m, ns.tolist())


class BestOfPoisson(PooledRule):
    """Best-of-Poisson from the BoN pool, one point per μ. PooledRule hands each rule method a line's `n`: here the
    index of its μ in `mus` (a μ need not make a whole N); `evaluate` then writes each line's own N, β and μ."""

    def __init__(self, mus: list[float]):
        self.mus = [float(mu) for mu in mus]
        super().__init__(list(range(len(self.mus))))
        self._weights: dict[tuple[int, int], torch.Tensor] = {}

    def weights(self, values: torch.Tensor, index: int, prompt: int) -> torch.Tensor:
        r, m = values.shape
        if (m, index) not in self._weights:
            self._weights[(m, index)] = pool_weights(m, self.mus[index])
        return self._weights[(m, index)].expand(r, m)

    def plugin_kl(self, level_values, mass, atomic, index, prompt) -> torch.Tensor:
        return kl_best_of_poisson_levels(mass, atomic, self.mus[index])

    def exact_log_probs(self, oracle, index: int) -> torch.Tensor:
        return best_of_poisson_log_probs(oracle.ref_log_probs, oracle.rewards, self.mus[index])

    def evaluate(self, ctx: EvalContext) -> list[PolicyPoint]:
        points = super().evaluate(ctx)
        m = ctx.caches[BON_POOL].m
        for point, mu in zip(points, self.mus):
            point.metrics.update(mu=mu, n=1.0 + mu, beta=1.0 / mu if mu > 0 else None,
                                 poisson_tail=poisson_tail(mu, m))
        return points


@register_objective
class BestOfPoissonObjective(Objective):
    name = "best_of_poisson"
    config = BestOfPoissonConfig

    def fit(self, ctx: RunContext) -> BestOfPoisson:
        return BestOfPoisson(self.cfg.mus(ctx.settings.eval.bon_pool_m))

    def target_log_probs(self, oracle):
        return None  # an inference-time method: no target to reach
