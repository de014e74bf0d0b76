"""`objective=bon_aware`: BoN-aware RL (Chow et al. 2024, "Inference-Aware Fine-Tuning for Best-of-N Sampling in
Large Language Models", arXiv:2412.15287; its BoN-aware RL): train π_θ for best-of-N′ sampling at inference,

    max_θ  J(π_θ) = E_x [ max@N′(π_θ; x) − β·KL(π_θ(·|x) ‖ π_ref(·|x)) ],   max@N′(π) = E_{y_1..y_N′ ~ π}[max_j r(y_j)],

N′ = objective.inference_n, β = objective.beta. On-policy RLOO with k = algo.rloo_k ≥ N′ samples per prompt; the
KL is the trainer's usual k1 penalty in the return (with its leave-one-out baseline); the reward part of each
sample's advantage is the unbiased max@k gradient estimator of Walder & Karkhanis 2025 ("Pass@K Policy
Optimization", PKPO, arXiv:2505.15201). Below, a group holds n = algo.rloo_k samples of one prompt and k = N′:

- ρ = Σ_j C(j−1, k−1)/C(n, k) · r_(j), rewards sorted ascending: the U-statistic of max@k, the average of max r_S
  over all k-subsets S of the group; unbiased for max@k.
- Score function: ∇E[ρ] = E[ρ·Σ_i ∇log π(y_i)]. In sample i's term only the subsets holding i depend on y_i; they
  are C(n−1, k−1) of C(n, k) = (k/n) of them, so ∇max@k = (1/n)·E[Σ_i k·m_i ∇log π(y_i)] with
  m_i = the mean over (k−1)-subsets T of the other n − 1 samples of max(r_i, max r_T) (mean over i of m_i = ρ).
- Any b_i not depending on y_i has E[b_i ∇log π(y_i)] = 0: s_i = k·(m_i − b_i) keeps the estimator unbiased with
  b_i the U-statistic of max@k over the other n − 1 samples (max@(k−1) when n = k). The trainer's loss averages
  s_i ∇log π(y_i) over the batch: exactly (1/n)·Σ_i, the estimator above. k = 1 gives s_i = r_i − mean of the
  others: RLOO itself, so N′ = 1 is KL-regularised RL (kl_rl).

Exact target on the synthetic task (`target_log_probs`): the maximiser π* of J over the enumerated table. J is not
concave in the logits, but it is concave in π on the simplex — max@N′(π) = r_max − Σ_l (v_{l+1} − v_l)·C_l^N′ over
the sorted reward levels v_l with C_l = P_π(r ≤ v_l) linear in π and t ↦ t^N′ convex, and KL(π‖π_ref) is strictly
convex — so π* is unique and is the stationary point of full support, where ∂J/∂π(y) = h(y) − β·log(π(y)/π_ref(y))
(+ a constant), h(y) = N′·E[max(r(y), max of N′ − 1 draws of π)], is the same for every y: π* ∝ π_ref·exp(h_{π*}/β).
Found by mirror ascent (θ ← (1 − α)·θ + α·(log π_ref + h_π/β), the entropic step on the simplex; α per prompt by a
step test, `bon_aware_optimum_log_probs`), float64, stopped when max_y |∂J/∂π(y) − E_π[∂J/∂π]|/β, the log-space
residual, is below a tolerance (1e-9 nats: ~100–250 steps, about a second, on the synthetic task).

BoN-aware SFT (Chow et al.: maximise the likelihood of expert data under BoN(π_θ)) is not implemented here: it needs
policy samples inside the SFT loop to estimate log F_π(r(y*)) and its gradient (a biased log-of-mean estimate) and an
expert data set to imitate."""

from __future__ import annotations

import functools
import logging
import math

import torch

from vbon_exp.objectives.base import RunContext, register_objective
from vbon_exp.objectives.rl_objective import RLObjective
from vbon_exp.settings.objective_inference import BoNAwareConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the max@k estimator (PKPO, §3)


def _comb(a: int, b: int) -> int:
    """C(a, b), 0 outside 0 ≤ b ≤ a."""
    return math.comb(a, b) if 0 <= b <= a else 0


@functools.lru_cache(maxsize=32)
def max_at_k_weights(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a group of n rewards sorted ascending, float64:
    - u [n]: ρ = u·r_sorted, the U-statistic of max@k (u_j = C(j−1, k−1)/C(n, k), j = 1..n);
    - a [n, n]: s_sorted = a @ r_sorted, the sample at sorted position p's advantage k·(m_p − b_p): m_p = (C(p−1, k−1)
      r_(p) + Σ_{j>p} C(j−2, k−2) r_(j))/C(n−1, k−1) (the max over a (k−1)-subset of the others is r_(p) when all of
      it lies below p, else r_(j) for its top position j), b_p the U-statistic of max@k_b over the others,
      k_b = min(k, n − 1) (the others' positions shift down by one above p).
    Ties: any order of tied rewards gives each the same values (a subset's max value does not depend on it)."""
    if not 1 <= k <= n or n < 2:
        raise ValueError(f"the max@k estimator needs 1 ≤ k ≤ n and n ≥ 2, got n={n}, k={k}")
    u = torch.tensor([_comb(j - 1, k - 1) / math.comb(n, k) for j in range(1, n + 1)], dtype=torch.float64)
    kb = min(k, n - 1)
    a = torch.zeros(n, n, dtype=torch.float64)
    for p in range(1, n + 1):
        for j in range(1, n + 1):
            if j == p:
                m, b = _comb(p - 1, k - 1) / math.comb(n - 1, k - 1), 0.0
            elif j > p:
                m, b = _comb(j - 2, k - 2) / math.comb(n - 1, k - 1), _comb(j - 2, kb - 1) / math.comb(n - 1, kb)
            else:
                m, b = 0.0, _comb(j - 1, kb - 1) / math.comb(n - 1, kb)
            a[p - 1, j - 1] = k * (m - b)
    return u, a


def _sorted(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(rewards, dim=-1, stable=True)
    return torch.gather(rewards.double(), -1, order), order


def max_at_k_estimate(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """[G] the unbiased estimate of max@k (the expected max of k draws) from each row of n ≥ k rewards [G, n]."""
    u, _ = max_at_k_weights(rewards.shape[-1], k)
    r_sorted, _ = _sorted(rewards)
    return r_sorted @ u.to(r_sorted.device)


def max_at_k_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """[G, n] s_i = k·(m_i − b_i) for each row of n ≥ k rewards [G, n], float64: (1/n)·Σ_i s_i ∇log π(y_i) is an
    unbiased estimate of ∇max@k (module docstring)."""
    _, a = max_at_k_weights(rewards.shape[-1], k)
    r_sorted, order = _sorted(rewards)
    s_sorted = r_sorted @ a.to(r_sorted.device).T
    return torch.empty_like(s_sorted).scatter_(-1, order, s_sorted)


class MaxAtKAdvantages:
    """RLOO's group transform for BoN-aware RL (vbon_exp.trainers.on_policy.GroupTransform): each prompt's rewards
    -> their max@N′ advantages; `estimate` gives each group's max@N′ estimate (logged as train/objective_reward)."""

    def __init__(self, k: int):
        self.k = int(k)

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        return max_at_k_advantages(rewards, self.k)

    def estimate(self, rewards: torch.Tensor) -> torch.Tensor:
        return max_at_k_estimate(rewards, self.k)


# --------------------------------------------------------------------------- the exact objective and its optimum


def expected_max(probs: torch.Tensor, rewards_sorted: torch.Tensor, order: torch.Tensor, n: int) -> torch.Tensor:
    """[P] max@n(π) = Σ_j r_(j)·(C_j^n − C_{j−1}^n) exactly, C_j the π-mass of the j lowest rewards (order sorts the
    rewards ascending). Ties need no care: within a tied run the terms telescope to v·(C_end^n − C_start^n), the
    probability that the best of n lands on that level. Differentiable in `probs` [P, K] (also unnormalised: the
    multilinear extension Σ_{y_1..y_n} Π π(y_j)·max r(y_j), whose gradient is h(y) = n·E[max(r(y), max of n−1)])."""
    c = torch.cumsum(torch.gather(probs, -1, order), dim=-1)
    c_prev = torch.cat([torch.zeros_like(c[..., :1]), c[..., :-1]], dim=-1)
    return (rewards_sorted * (c ** n - c_prev ** n)).sum(-1)


class BoNAwareProblem:
    """J(π) per prompt = max@N′(π) − β·KL(π‖π_ref) over an enumerated table (log π_ref [P, K], rewards [P, K])."""

    def __init__(self, logp_ref: torch.Tensor, rewards: torch.Tensor, n: int, beta: float):
        self.logp_ref = logp_ref.to(torch.float64)
        self.rewards_sorted, self.order = _sorted(rewards)
        self.n, self.beta = int(n), float(beta)

    def value(self, logp: torch.Tensor) -> torch.Tensor:
        """[P] J at the policy log π [P, K]."""
        p = logp.exp()
        kl = (p * (logp - self.logp_ref)).sum(-1)
        return expected_max(p, self.rewards_sorted, self.order, self.n) - self.beta * kl

    def drift(self, logp: torch.Tensor) -> torch.Tensor:
        """[P, K] ∂J/∂π(y) − E_π[∂J/∂π], ∂J/∂π = h − β·(log π − log π_ref) (+ a constant): the logits' gradient is
        π ⊙ drift, and drift = 0 on the support is the stationarity (optimality) condition."""
        p = logp.exp().detach().requires_grad_(True)
        (h,) = torch.autograd.grad(expected_max(p, self.rewards_sorted, self.order, self.n).sum(), p)
        u = h - self.beta * (logp - self.logp_ref)
        return u - (p.detach() * u).sum(-1, keepdim=True)

    def logit_gradient(self, logp: torch.Tensor) -> torch.Tensor:
        """[P, K] ∇_θ J for π = softmax(θ)."""
        return logp.exp() * self.drift(logp)


def bon_aware_optimum_log_probs(logp_ref: torch.Tensor, rewards: torch.Tensor, n: int, beta: float,
                                start: torch.Tensor | None = None, tol: float = 1e-9,
                                max_steps: int = 100_000) -> torch.Tensor:
    """log π* [P, K], the maximiser of max@n(π) − β·KL(π‖π_ref) per prompt (module docstring), by mirror ascent from
    `start` (log-probs; π_ref by default) until the log-space residual max_y |drift(y)|/β ≤ tol nats.

    A step of size α is kept when J does not fall (up to round-off) and the slope of J along the step at its end is
    ≥ −½ its slope at the start (it did not overshoot the maximum along the step); then α grows ×1.5 (≤ 1), else it
    halves. The slope test, from gradients exact to ~1e-12, is what steers the last digits: J's own differences
    fall below float64 round-off once the residual is ~1e-6 nats."""
    problem = BoNAwareProblem(logp_ref, rewards, n, beta)
    logp = torch.log_softmax((problem.logp_ref if start is None else start).to(torch.float64), dim=-1)
    alpha = torch.ones(logp.shape[0], 1, dtype=torch.float64)
    value, drift = problem.value(logp), problem.drift(logp)
    for step in range(max_steps):
        residual = float(drift.abs().amax() / problem.beta)
        if residual <= tol:
            log.debug("BoN-aware optimum: %d mirror-ascent steps, residual %.2g nats", step, residual)
            return logp
        # the entropic step θ + (α/β)·∂J/∂π, which is (1 − α)·θ + α·(log π_ref + h/β) before normalising
        candidate = torch.log_softmax(logp + alpha * drift / problem.beta, dim=-1)
        new_value, new_drift = problem.value(candidate), problem.drift(candidate)
        move = candidate - logp  # the slopes of J along it: Σ ∇_θJ ⊙ move, ∇_θJ = π ⊙ drift
        slope_start = (logp.exp() * drift * move).sum(-1)
        slope_end = (candidate.exp() * new_drift * move).sum(-1)
        keep = (new_value >= value - 1e-13 * (1.0 + value.abs())) & (slope_end >= -0.5 * slope_start)
        logp = torch.where(keep[:, None], candidate, logp)
        value = torch.where(keep, new_value, value)
        drift = torch.where(keep[:, None], new_drift, drift)
        alpha = torch.where(keep[:, None], (alpha * 1.5).clamp(max=1.0), alpha * 0.5)
    raise RuntimeError(f"the BoN-aware optimum did not converge in {max_steps} mirror-ascent steps (residual "
                       f"{residual:.3g} nats > {tol}); β = {beta} may be too small for float64")


# --------------------------------------------------------------------------- the objective


@register_objective
class BoNAwareObjective(RLObjective):
    name = "bon_aware"
    config = BoNAwareConfig
    transform = "identity"  # each sample brings r(y); the group transform makes the max@N′ advantages

    def __init__(self, cfg):
        super().__init__(cfg)
        self._targets: dict[int, tuple] = {}  # id(oracle) -> (oracle, log π*): one optimisation per oracle

    @property
    def inference_n(self) -> int:
        return int(self.cfg.inference_n)

    def trainer_options(self, ctx: RunContext) -> dict:
        return {"group_transform": MaxAtKAdvantages(self.inference_n)}

    def target_log_probs(self, oracle):
        if id(oracle) not in self._targets:
            target = bon_aware_optimum_log_probs(oracle.ref_log_probs, oracle.rewards, self.inference_n,
                                                 float(self.beta))
            self._targets[id(oracle)] = (oracle, target)
        return self._targets[id(oracle)][1]

    def fit(self, ctx: RunContext):
        policy = super().fit(ctx)
        ctx.extras["inference_n"] = self.inference_n  # a fact of the line; its identity is the settings' variant
        return policy
