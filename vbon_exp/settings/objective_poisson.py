"""conf/objective/best_of_poisson.yaml: Best-of-Poisson's settings (vbon_exp/objectives/best_of_poisson.py), listed
in vbon_exp.settings.objective.OBJECTIVE_SETTINGS.

Best-of-Poisson (Khalaf et al. 2025, arXiv:2506.19248) draws a sample count per query, N = 1 + K with K ~ Poisson(μ),
and keeps the best of N π_ref samples. Its place on the shared (β, N) axis: N is the mean sample count E[N] = 1 + μ
(the compute it spends, and BoN's N at the same cost), β = 1/(E[N] − 1) = 1/μ; so a β sweep shared with the other
objectives (`objective.beta=1/3,1/7,…`) runs it at μ = 1/β, E[N] = BoN's N."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from omegaconf import OmegaConf

from vbon_exp.errors import ConfigError, check_number
from vbon_exp.settings.beta_n import BON_POOL, ObjectiveConfig, bon_pool_ns, whole

# The largest P(N > M) accepted: the pool estimates BoP with N truncated at the pool's size M (renormalised), which
# moves an expectation by at most this times the reward's range — far below any pool SE.
POISSON_TAIL_MAX = 1e-6


def poisson_tail(mu: float, m: int) -> float:
    """P(N > m) for N = 1 + Poisson(μ), i.e. P(K ≥ m) with P(K = k) = e^{−μ}·μ^k/k!: summed directly where m > μ
    (the terms fall faster than geometrically, ratio μ/(k + 1) < 1: small tails keep their digits), else
    1 − P(K < m)."""
    if mu == 0:
        return 0.0 if m >= 1 else 1.0

    def term(k: int) -> float:
        return math.exp(-mu + k * math.log(mu) - math.lgamma(k + 1.0))

    if m <= mu:
        return max(0.0, 1.0 - math.fsum(term(k) for k in range(int(m))))
    terms, k = [], int(m)
    while not terms or terms[-1] > 1e-18 * terms[0]:
        terms.append(term(k))
        k += 1
    return math.fsum(terms)


def pool_mus(m: int) -> list[float]:
    """`objective.mu=all`: μ = E[N] − 1 for E[N] = 1, 2, 4, … ≤ M/4, the mean sample counts of BoN's `objective.n=all`
    lines (vbon_exp.settings.beta_n.bon_pool_ns): one results line each."""
    return [float(n - 1) for n in bon_pool_ns(m)]


# --------------------------------------------------------------------------- μ <-> (N, β) resolvers


def _mu_from_beta_if_set(default, *, _parent_):
    """`${mu_from_beta_if_set:3}`: μ = 1/β when the objective's `beta` was set to a value (a β sweep shared with the
    other objectives), else `default`; `beta` itself follows μ (`${beta_from_n:${.n}}`), so there is no cycle."""
    if "beta" not in _parent_ or OmegaConf.is_interpolation(_parent_, "beta"):
        return default
    try:
        beta = float(_parent_.beta)
    except (TypeError, ValueError):
        return None
    if not beta > 0:
        return None
    mu = 1.0 / beta
    return float(whole(mu)) if whole(mu) is not None else mu  # 1/(1/7) = 7.000000000000001 is 7


def _n_from_mu(mu):
    """`${n_from_mu:${.mu}}`: the mean sample count E[N] = 1 + μ; `all` stays `all`; anything else null (the check
    names objective.mu)."""
    if mu == "all":
        return "all"
    try:
        mu = float(mu)
    except (TypeError, ValueError):
        return None
    return 1.0 + mu if mu >= 0 else None


def register_resolvers() -> None:
    for name, fn in (("mu_from_beta_if_set", _mu_from_beta_if_set), ("n_from_mu", _n_from_mu)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


@dataclass
class BestOfPoissonConfig(ObjectiveConfig):
    """conf/objective/best_of_poisson.yaml."""

    method_label: ClassVar[str] = "Best-of-Poisson"  # the legend (declared, not a key)

    # Objective name (results column).
    name: str = "best_of_poisson"
    # μ ≥ 0, the Poisson mean: N = 1 + Poisson(μ) samples per query (E[N] = 1 + μ; μ = 0 is π_ref); default 3, or 1/β
    # when objective.beta is set; or `all` (from the BoN pool): μ = E[N] − 1 for E[N] = 1, 2, 4, … ≤
    # eval.bon_pool_m/4, one results line each (results column mu).
    mu: Union[int, float, str, None] = "${mu_from_beta_if_set:3}"  # type: ignore[assignment]  (resolved)
    # The mean sample count E[N] = 1 + μ (derived from mu; results column n).
    n: Union[int, float, str, None] = "${n_from_mu:${.mu}}"  # type: ignore[assignment]  (resolved)
    # β = 1/(E[N] − 1) = 1/μ (follows mu unless set; null at μ = 0; results column).
    beta: Optional[float] = "${beta_from_n:${.n}}"  # type: ignore[assignment]  (resolved)

    def check(self, prefix: str = "objective") -> None:
        if self.mu == "all":
            if self.beta is not None:
                raise ConfigError(f"{prefix}.beta={self.beta!r} with {prefix}.mu=all: `all` gives one line per μ "
                                  f"(β = 1/μ each); drop {prefix}.beta")
            if self.n != "all":
                raise ConfigError(f"{prefix}.n={self.n!r}: it is derived from {prefix}.mu (E[N] = 1 + μ); leave it")
            return
        if isinstance(self.mu, str) or self.mu is None:
            raise ConfigError(f"{prefix}.mu must be a number ≥ 0 or 'all', got {self.mu!r} (or set {prefix}.beta > 0: "
                              "μ = 1/β)")
        check_number(f"{prefix}.mu", self.mu, minimum=0)
        if not isinstance(self.n, (int, float)) or not math.isclose(self.n, 1.0 + self.mu, rel_tol=1e-9):
            raise ConfigError(f"{prefix}.n={self.n!r}: Best-of-Poisson's N is its mean sample count 1 + μ, derived "
                              f"from {prefix}.mu={self.mu!r}; set {prefix}.mu (or {prefix}.beta: μ = 1/β), not "
                              f"{prefix}.n")
        expected = None if self.mu == 0 else 1.0 / self.mu
        if (self.beta is None) != (expected is None) or (
                expected is not None and not math.isclose(self.beta, expected, rel_tol=1e-6)):
            raise ConfigError(f"{prefix}.beta={self.beta!r} and {prefix}.mu={self.mu!r} disagree (β = 1/μ); set one "
                              "of them, the other follows")
        super().check(prefix)

    def mus(self, pool_m: int) -> list[float]:
        """The μ of each results line."""
        return pool_mus(pool_m) if self.mu == "all" else [float(self.mu)]

    def evaluation_caches(self, eval_settings) -> dict[str, int]:
        return {BON_POOL: eval_settings.bon_pool_m}  # every μ from one pool of π_ref samples per test prompt

    def check_run(self, settings) -> None:
        """The pool of M estimates BoP with N truncated at M: refuse a μ whose P(N > M) is not negligible."""
        pool = settings.eval.bon_pool_m
        for mu in self.mus(pool):
            tail = poisson_tail(mu, pool)
            if tail > POISSON_TAIL_MAX:
                raise ConfigError(f"objective.mu={mu:g}: P(N > eval.bon_pool_m={pool}) = {tail:.2g} for N = 1 + "
                                  f"Poisson(μ), above {POISSON_TAIL_MAX:g}: the pool of {pool} samples per prompt "
                                  "cannot hold such draws; lower objective.mu or raise eval.bon_pool_m")
