"""`objective=soft_bon`: soft best-of-N (Verdun, Oesterling, Lakkaraju & Calmon 2025, *Soft Best-of-n Sampling for
Model Alignment*, arXiv:2505.03156): draw N samples from π_ref and keep sample i with probability softmax(r_i/λ) over
the N. λ → 0 is BoN, λ → ∞ is π_ref: a smooth path between them at each N. Nothing is trained.

Exact distribution. With z(y) = exp(r(y)/λ) and 1/x = ∫_0^∞ e^(−t·x) dt,
    π_soft(y) = N·π_ref(y)·E[z(y) / (z(y) + Σ_{j=2..N} z(Y_j))] = N·π_ref(y)·z(y)·∫_0^∞ e^(−t·z(y))·M(t)^(N−1) dt,
M(t) = E_{π_ref}[e^(−t·z(Y))], a one-dimensional integral computed by Simpson's rule in log t (`soft_bon_log_probs`:
the integrand is smooth in log t: nodes 0.05 apart agree with 0.002 apart to 1e-15 on the synthetic task;
tests/test_inference_relatives.py checks it against enumerating every N-tuple).

Evaluation from the BoN pool (vbon_exp/evaluation/pooled_rule.py), every N at once with `objective.n=all`: reward and
win rate are unbiased incomplete U-statistics — the kept sample's expected reward over `objective.subsets` random
N-subsets of each prompt's pool; the KL is the plug-in KL of soft BoN on the pool's empirical distribution (biased by
O(1/M); its bootstrap SE is not computed: a quadrature per replicate)."""

from __future__ import annotations

import math

import torch

from vbon_exp.evaluation.pooled_rule import PooledRule
from vbon_exp.objectives.base import Objective, RunContext, register_objective
from vbon_exp.trainers.shared import derived_seed
from vbon_exp.settings.objective import SoftBoNConfig

MAX_NODES = 2_000_000


def soft_bon_log_probs(logp_ref: torch.Tensor, rewards: torch.Tensor, n: float, lam: float,
                       step: float = 0.05) -> torch.Tensor:
    """Exact log π_soft(y) over an enumerated support [..., K] (module docstring), by Simpson's rule in u = log t
    with nodes `step` apart, over the range where the integrand lives: from e^u·z_max = e^−30 to e^u·z_min = e^5."""
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


class SoftBoN(PooledRule):
    """Soft BoN from the BoN pool: the incomplete U-statistic over random N-subsets, the plug-in KL."""

    kl_replicates = False  # the plug-in KL is a quadrature: once, not per bootstrap replicate

    def __init__(self, ns: list[int], lam: float, subsets: int, seed: int):
        super().__init__(ns)
        self.lam, self.subsets, self.seed = float(lam), int(subsets), int(seed)

    def columns(self) -> dict:
        return {"lam": self.lam}

    def weights(self, values: torch.Tensor, n: int, prompt: int) -> torch.Tensor:
        """The average, over `subsets` random N-subsets of the pool's positions (the same subsets in every bootstrap
        replicate: they are drawn apart from the pool), of each member's chance softmax(r/λ) of being kept."""
        r, m = values.shape
        g = torch.Generator().manual_seed(derived_seed(self.seed, "soft-bon-subsets", prompt, n))
        positions = torch.rand(self.subsets, m, generator=g, dtype=torch.float64).topk(n, dim=-1).indices  # [S, N]
        chosen = torch.softmax(values[:, positions] / self.lam, dim=-1)  # [R, S, N]
        weights = torch.zeros(r, m, dtype=torch.float64)
        weights.scatter_add_(1, positions.reshape(1, -1).expand(r, -1), chosen.reshape(r, -1))
        return weights / self.subsets

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
