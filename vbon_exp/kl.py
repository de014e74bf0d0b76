"""KL estimators, one registry for the trainers' penalty, the policies' per-sample terms and the evaluator's x-axis.

Each estimator maps what a sample gives to a per-sample (or per-token) term whose mean estimates
KL(π_θ ‖ π_ref) = E_{y∼π_θ}[log π_θ(y|x) − log π_ref(y|x)] (Schulman 2020, "Approximating KL divergence"):
- `k1`: log π_θ(y) − log π_ref(y) (unbiased; can be negative per sample); the trainers' per-token penalty;
- `k2`: ½(log π_θ(y) − log π_ref(y))² (biased: second order in the log-ratio, non-negative; per token in a loss its
  gradient on-policy is KL's own, Tang & Munos 2025);
- `k3`: (ρ − 1) − log ρ, ρ = π_ref(y)/π_θ(y) (unbiased, non-negative per sample, lower variance near π_ref);
- `full`: Σ_t KL(π_θ(·|x,y<t) ‖ π_ref(·|x,y<t)) over the whole vocabulary (needs token distributions; the lowest
  variance; the seed code's logged KL).
`eval.kl_estimator` picks which one is the results' `kl` column (`auto`: full where the policy has token
distributions, else k1)."""

from __future__ import annotations

from typing import Callable

import torch

# name -> (log π_θ, log π_ref) -> per-sample or per-token term, same shape. `full` takes log-distributions [..., V].
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}


def register_kl(name: str):
    def add(fn):
        KL_ESTIMATORS[name] = fn
        return fn

    return add


@register_kl("k1")
def k1(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """log π_θ − log π_ref of the sampled sequence (or token)."""
    return logp - logq


@register_kl("k2")
def k2(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """½(log π_θ − log π_ref)²: non-negative; its mean is KL only to second order (Schulman 2020)."""
    return 0.5 * (logp - logq) ** 2


@register_kl("k3")
def k3(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """(ρ − 1) − log ρ with log ρ = log π_ref − log π_θ: non-negative, mean KL(π_θ‖π_ref)."""
    log_rho = logq - logp
    return torch.expm1(log_rho) - log_rho


@register_kl("full")
def full(log_dist_p: torch.Tensor, log_dist_q: torch.Tensor) -> torch.Tensor:
    """Σ_v π_θ(v)·(log π_θ(v) − log π_ref(v)) at each position: [..., V] log-distributions -> [...]."""
    return (log_dist_p.exp() * (log_dist_p - log_dist_q)).sum(-1)


# What the `auto` choice takes, in order, from what a policy offers (BoN has no token distributions: k1).
AUTO_ORDER = ("full", "k1")


def primary_estimator(choice: str, available) -> str:
    """The estimator that gives the `kl` column: `choice`, or with `auto` the first of AUTO_ORDER available."""
    if choice == "auto":
        return next(name for name in AUTO_ORDER if name in available)
    return choice
