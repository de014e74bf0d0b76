"""The synthetic task's gold reward and its exact gold curves.

The gold reward (task.gold = s): gold(y) = r(y) + s·δ(y), δ(y) = P(y) − max(r(y), 0)²/2. The proxy r is the reward
every method optimises; its error has two parts: P, a random table reward of r's own form (std ≈ 1, from
task.gold_seed: regressional error), and an over-reward of the proxy's high values growing as their square
(Goodhart's extremal case: past r = 1/s the gold reward falls as the proxy rises). Optimising the proxy harder then
pays in gold up to a point and costs beyond it — inference-time reward hacking (Khalaf et al. 2025, arXiv:2506.19248),
here exactly.

The gold curves: BoN over N, Best-of-Poisson over μ, the proxy's KL-regularised optimum π*_β over β — and, in runs
of soft BoN only (METHOD_CURVES: a quadrature per point), soft BoN over λ at N = 4, 16, 64 — each with its exact KL,
proxy reward and win rate, gold reward and gold win rate along its parameter. HedgeTune (Khalaf et al. 2025) tunes
exactly this parameter, the one that maximises the gold reward; vbon_exp/analysis/gold_exact.py finds it on these
curves, which SyntheticOracle.frontier_curves writes into exact_frontier.json beside the frontiers."""

from __future__ import annotations

import math

import torch

from vbon_exp import bon
from vbon_exp.bon_relatives import best_of_poisson_log_ratio, soft_bon_log_probs


def gold_rewards(rewards: torch.Tensor, perturbation: torch.Tensor, size: float) -> torch.Tensor:
    """gold = r + size·(P − max(r, 0)²/2) (module docstring), elementwise."""
    return rewards + size * (perturbation - rewards.clamp(min=0.0) ** 2 / 2)


# The parameter grids, each from its least to its most optimised end (KL increasing). BoN: every whole N to 64 (the
# presets' largest), then log-spaced whole N to 2^14 (the exact π_BoN curve's range). Best-of-Poisson: μ = 0 (π_ref),
# then log-spaced to 2^14 (E[N] = 1 + μ). π*_β: log-spaced β from 100 down to 1e-3 (KL from ~0 towards the greedy
# policy's). Soft BoN: λ log-spaced from 10 (≈ π_ref at the synthetic reward's spread) down to 0.1 (near BoN at these
# N; each point is a quadrature whose cost grows as 1/λ: ~1–3 s on the synthetic task).
BON_NS = sorted({*range(1, 65), *(round(n) for n in torch.logspace(math.log10(64), 14 * math.log10(2), 40).tolist())})
POISSON_MUS = [0.0, *torch.logspace(-2, 14 * math.log10(2), 80, dtype=torch.float64).tolist()]
OPTIMUM_BETAS = torch.logspace(2, -3, 60, dtype=torch.float64).tolist()
SOFT_BON_NS = (4, 16, 64)
SOFT_BON_LAMS = torch.logspace(1, -1, 12, dtype=torch.float64).tolist()
# Simpson's step in log t for the soft-BoN curves (the oracle's exact values use 0.05): 0.2 agrees with 0.05 to a
# relative 1e-10 on the synthetic task (tests/test_synthetic_gold.py checks 1e-8), at a quarter of the cost.
SOFT_BON_STEP = 0.2


def utilities(oracle) -> dict[str, torch.Tensor]:
    """What each curve point averages, [P, K] each: the proxy reward and win probability, the gold ones."""
    return {"reward": oracle.rewards, "win_rate": oracle.win_probability(oracle.rewards),
            "gold_reward": oracle.gold_rewards, "gold_win_rate": oracle.win_probability(oracle.gold_rewards)}


def _curve(oracle, values: dict[str, torch.Tensor], parameter: str, grid: list[float], log_probs) -> dict:
    """{parameter: grid, kl: [...], reward: [...], ...}: the exact values of `log_probs(θ)` [P, K] at each θ, averaged
    over prompts as SyntheticOracle.metrics does. The curve stops where it has converged (the greedy limit: its KL
    grows by less than 1e-12 from one grid point to the next), so its KL increases along it."""
    out: dict[str, list[float]] = {parameter: [], "kl": [], **{name: [] for name in values}}
    for theta in grid:
        logp = log_probs(theta)
        kl = float(bon.kl(logp, oracle.ref_log_probs).mean())
        if out["kl"] and kl <= out["kl"][-1] + 1e-12:
            break
        p = logp.exp()
        out[parameter].append(float(theta))
        out["kl"].append(kl)
        for name, u in values.items():
            out[name].append(float((p * u).sum(-1).mean()))
    return out


def soft_bon_gold_curves(oracle, values: dict[str, torch.Tensor]) -> dict[str, dict]:
    """gold_soft_bon_n<N> (over lam) for N in SOFT_BON_NS: λ at fixed N, as HedgeTune tunes soft BoN."""
    ref, rewards = oracle.ref_log_probs, oracle.rewards
    return {f"gold_soft_bon_n{n}": _curve(oracle, values, "lam", SOFT_BON_LAMS, lambda lam, n=n: soft_bon_log_probs(
        ref, rewards, n, lam, step=SOFT_BON_STEP)) for n in SOFT_BON_NS}


# objective name -> the gold curves only its own runs write (too costly for every run of the synthetic task)
METHOD_CURVES = {"soft_bon": soft_bon_gold_curves}


def gold_curves(oracle, method: str | None = None) -> dict[str, dict[str, list[float]]]:
    """The curves HedgeTune searches, by name: gold_bon (over n), gold_best_of_poisson (over mu), gold_optimum (π*_β
    of the proxy, over beta), and METHOD_CURVES[method] where the run's method has some."""
    values = utilities(oracle)
    ref = oracle.ref_log_probs.to(torch.float64)
    log_le, log_lt, log_level = bon.log_reward_cdfs(ref, oracle.rewards)  # once for every point of the curves
    log_f = torch.logaddexp(log_lt, log_level)
    curves = {
        "gold_bon": _curve(oracle, values, "n", BON_NS,
                           lambda n: ref + bon.bon_log_ratio_closed_form(log_f, log_level, n)),
        "gold_best_of_poisson": _curve(oracle, values, "mu", POISSON_MUS,
                                       lambda mu: ref + best_of_poisson_log_ratio(log_le, log_level, mu)),
        "gold_optimum": _curve(oracle, values, "beta", OPTIMUM_BETAS, oracle.optimum_log_probs),
    }
    if method in METHOD_CURVES:
        curves.update(METHOD_CURVES[method](oracle, values))
    return curves
