"""`objective=soft_bon`: soft best-of-N (Verdun, Oesterling, Lakkaraju & Calmon 2025, *Soft Best-of-n Sampling for
Model Alignment*, arXiv:2505.03156): draw N samples from π_ref and keep sample i with probability softmax(r_i/λ) over
the N. λ → 0 is BoN, λ → ∞ is π_ref: a smooth path between them at each N. Nothing is trained.

Exact distribution. With z(y) = exp(r(y)/λ) and 1/x = ∫_0^∞ e^(−t·x) dt,
    π_soft(y) = N·π_ref(y)·E[z(y) / (z(y) + Σ_{j=2..N} z(Y_j))] = N·π_ref(y)·z(y)·∫_0^∞ e^(−t·z(y))·M(t)^(N−1) dt,
M(t) = E_{π_ref}[e^(−t·z(Y))], a one-dimensional integral computed by Simpson's rule in log t (`soft_bon_log_probs`:
the integrand is smooth in log t: nodes 0.05 apart agree with 0.002 apart to 1e-15 on the synthetic task;
tests/test_inference_relatives.py checks it against enumerating every N-tuple).

Evaluation from the BoN pool (vbon_exp/evaluation/pooled_rule.py), every N at once with `objective.n=all`: reward and
win rate are unbiased U-statistics — the kept sample's expected reward over every N-subset of each prompt's pool
where C(M, N) ≤ `objective.subsets`, else over that many random ones, redrawn per bootstrap replicate; the KL is
the plug-in KL of soft BoN on the pool's empirical distribution (biased by O(1/M); its bootstrap SE is not computed:
a quadrature per replicate)."""

from __future__ import annotations

import torch

# the exact distribution lives in vbon_exp/bon_relatives.py (the synthetic oracle reads it too); re-exported here
from vbon_exp.bon_relatives import MAX_NODES, soft_bon_log_probs  # noqa: F401
from vbon_exp import pool_estimators
from vbon_exp.evaluation.pooled_rule import PooledRule
from vbon_exp.objectives.base import Objective, RunContext, register_objective
from vbon_exp.trainers.shared import derived_seed
from vbon_exp.settings.objective import SoftBoNConfig


class SoftBoN(PooledRule):
    """Soft BoN from the BoN pool: the U-statistic over the pool's N-subsets (complete where there are at most
    `objective.subsets` of them, else incomplete over that many random ones, redrawn in every bootstrap replicate so
    that the SE covers the draw), the plug-in KL."""

    kl_replicates = False  # the plug-in KL is a quadrature: once, not per bootstrap replicate

    def __init__(self, ns: list[int], lam: float, subsets: int, seed: int):
        super().__init__(ns)
        self.lam, self.subsets, self.seed = float(lam), int(subsets), int(seed)

    def columns(self) -> dict:
        return {"lam": self.lam}

    def weights(self, values: torch.Tensor, n: int, prompt: int) -> torch.Tensor:
        """Each pool member's chance softmax(r/λ) of being kept, averaged over N-subsets of the row's positions
        (pool_estimators.subset_positions: all of them, or random ones drawn for each row), rows a few at a time."""
        r, m = values.shape
        g = torch.Generator().manual_seed(derived_seed(self.seed, "soft-bon-subsets", prompt, n))
        weights = torch.zeros(r, m, dtype=torch.float64)
        chunk = max(1, (1 << 22) // max(m, self.subsets * n))  # rows per [chunk, S, N] table: ~4M entries
        for lo in range(0, r, chunk):
            rows = values[lo:lo + chunk]
            positions = pool_estimators.subset_positions(m, n, self.subsets, rows.shape[0], g)  # [c, S, N]
            flat = positions.reshape(rows.shape[0], -1)
            chosen = torch.softmax(rows.gather(1, flat).view(positions.shape) / self.lam, dim=-1)
            weights[lo:lo + chunk].scatter_add_(1, flat, chosen.reshape(rows.shape[0], -1))
            weights[lo:lo + chunk] /= positions.shape[1]
        return weights

    def plugin_kl(self, level_values, mass, atomic, n, prompt) -> torch.Tensor:
        log_q = torch.log(mass)
        log_soft = soft_bon_log_probs(log_q, level_values.expand_as(mass), n, self.lam)
        p = log_soft.exp()
        return torch.where(p > 0, p * (log_soft - log_q), torch.zeros_like(p)).sum(-1).clamp(min=0.0)

    def exact_log_probs(self, oracle, n: int) -> torch.Tensor:
        return soft_bon_log_probs(oracle.ref_log_probs, oracle.rewards, n, self.lam)


@register_objective
class SoftBoNObjective(Objective):
    name = "soft_bon"
    config = SoftBoNConfig

    def fit(self, ctx: RunContext) -> SoftBoN:
        return SoftBoN(self.cfg.ns(ctx.settings.eval.bon_pool_m), self.cfg.lam, self.cfg.subsets, ctx.settings.seed)

    def target_log_probs(self, oracle):
        return None  # an inference-time method: no target to reach
