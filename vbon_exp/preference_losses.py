"""Preference-pair math for DPO, IPO and BoNBoN: the losses, and their exact targets on an enumerated support.

With h(y) = log π_θ(y|x) − log π_ref(y|x) (summed over response tokens) and a pair (y_w, y_l) = (best, worst) of n
samples from π_ref, the per-pair losses are
- DPO (Rafailov et al. 2023, eq. 7):        −log σ(β·(h(y_w) − h(y_l)))
- IPO (Azar et al. 2023, eq. 17):           (h(y_w) − h(y_l) − τ)²,  τ = 1/(2β)
- BoNBoN (Gui, Gârbacea & Veitch 2024):     α·(−log π_θ(y_w|x)) + (1 − α)·(h(y_w) − h(y_l) − τ)²,
                                            τ = 1/(2β*_n), β*_n = 1/(2(n − 1)·H_{n−1})
(τ = (n − 1)·H_{n−1} is E[log π_BoN/π_ref (y_w) − log π_BoN/π_ref (y_l)] for continuous rewards.)

Exact targets (`squared_loss_minimiser`). On a finite support the population squared loss is a quadratic form in
h. Sort the reward levels g = 1..G (ties share a level), with π_ref masses Q_g and cumulative C_g = Σ_{k≤g} Q_k.
The (best, worst) pair falls on levels (i, j), i > j, with probability
    P_ij = (C_i − C_{j−1})^n − (C_{i−1} − C_{j−1})^n − (C_i − C_j)^n + (C_{i−1} − C_j)^n
(all n samples between levels j and i, at least one on each); a draw whose n samples all tie has no pair and is
dropped, so P is normalised by its total 1 − Σ_g Q_g^n. With p_w = P·1, p_l = Pᵀ·1 (the laws of y_w and y_l) and
L = diag(P1 + Pᵀ1) − (P + Pᵀ) the Laplacian of the comparison graph,
    E[(h_w − h_l − τ)²] = hᵀLh − 2τ·hᵀ(p_w − p_l) + τ²,
so IPO's minimiser solves L h = τ(p_w − p_l) (unique up to a constant, which π = π_ref·e^h/Z ignores). BoNBoN adds
α·(−p_wᵀh + log Σ_y π_ref(y)e^{h(y)}), and its minimiser is the fixed point
    2(1 − α)·(L h − τ(p_w − p_l)) = α·(p_w − π_h),   π_h = π_ref·e^h / Z,
a strictly convex problem in h (modulo constants) solved here by Newton's method. Neither is π_BoN: at π_BoN the
residual h_w − h_l − τ has mean zero given y_w but not given y_l (for continuous rewards, given u = F(y_l) the
winner is u + (1 − u)·max of n − 1 uniforms, whose mean log-ratio depends on u), so π_BoN does not make the
gradient vanish. Within a tie level the minimiser's h is constant (the loss is symmetric in the level's responses),
so the system is solved on levels.

DPO on (best, worst) pairs has no finite minimiser: every pair with r(y_w) > r(y_l) has positive probability and
the logistic loss only reaches its infimum 0 as h(y_w) − h(y_l) → ∞ for all of them, i.e. as π_θ → the point mass
on each prompt's highest-reward response (Azar et al. 2023, §4.2: deterministic preferences make β irrelevant at
the optimum). `pair_objective` evaluates any of these population losses exactly, for tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def harmonic(m: int) -> float:
    """H_m = 1 + 1/2 + … + 1/m (H_0 = 0)."""
    return math.fsum(1.0 / k for k in range(1, int(m) + 1))


def bonbon_beta_star(n: int) -> float:
    """β*_n = 1/(2(n − 1)·H_{n−1}): the IPO coefficient whose margin 1/(2β*_n) = (n − 1)·H_{n−1} is BoN's expected
    log-ratio gap between the best and the worst of n (Gui et al. 2024)."""
    if n < 2:
        raise ValueError(f"BoNBoN needs n ≥ 2 samples per pair, got {n}")
    return 1.0 / (2.0 * (n - 1) * harmonic(n - 1))


# --------------------------------------------------------------------------- losses (per pair)


def dpo_loss(h_w: torch.Tensor, h_l: torch.Tensor, beta: float) -> torch.Tensor:
    """−log σ(β·(h_w − h_l)) per pair (Rafailov et al. 2023, eq. 7; TRL's loss_type="sigmoid")."""
    return -F.logsigmoid(beta * (h_w - h_l))


def squared_margin_loss(h_w: torch.Tensor, h_l: torch.Tensor, tau: float) -> torch.Tensor:
    """(h_w − h_l − τ)² per pair: IPO with τ = 1/(2β) (Azar et al. 2023, eq. 17), BoNBoN's with τ = 1/(2β*_n)."""
    return (h_w - h_l - tau) ** 2


# --------------------------------------------------------------------------- the exact (best, worst) pair law


def reward_levels(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(level of each response [K] in 0..G−1, ascending by reward; the sorted distinct rewards [G])."""
    values, level = torch.unique(rewards.to(torch.float64), sorted=True, return_inverse=True)
    return level, values


def _second_difference(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """(1 − a − b)^n − (1 − a)^n − (1 − b)^n + 1 for a, b ≥ 0, a + b ≤ 1, without the cancellation of the
    expanded form: with e(x) = (1 − x)^n − 1 = expm1(n·log1p(−x)) it is e(a + b) − e(a) − e(b)."""
    def e(x):
        return torch.expm1(n * torch.log1p(-x.clamp(max=1.0)))

    return e(a + b) - e(a) - e(b)


def pair_matrix(level_mass: torch.Tensor, n: int, block: int = 512) -> torch.Tensor:
    """P [G, G] float64: P[i, j] = probability that the best of n draws from π_ref is on level i and the worst on
    level j (i > j; zero elsewhere), normalised over draws that make a pair (not all n on one level)."""
    q = level_mass.to(torch.float64)
    g = q.shape[0]
    if g < 2:
        raise ValueError("every response has the same reward: (best, worst) pairs do not exist")
    c = torch.cumsum(q, 0)
    c_below = c - q  # C_{j−1}
    p = torch.zeros(g, g, dtype=torch.float64)
    for lo in range(0, g, block):
        hi = min(g, lo + block)
        rows = torch.arange(lo, hi)
        lower = rows[:, None] > torch.arange(hi)[None, :]
        span = torch.where(lower, c[rows, None] - c_below[None, :hi], 1.0)  # C_i − C_{j−1}: mass of levels j..i
        span = span.clamp(min=torch.finfo(torch.float64).tiny)
        # P_ij = span^n · [(1 − a − b)^n − (1 − a)^n − (1 − b)^n + 1] with a = Q_i/span, b = Q_j/span (sign: below)
        blk = span.pow(n) * _second_difference(q[rows, None] / span, q[None, :hi] / span, n)
        p[lo:hi, :hi] = blk.masked_fill_(~lower, 0.0).clamp_(min=0.0)
    return p / p.sum()


# --------------------------------------------------------------------------- the squared loss's exact minimiser


def _gauge_solve(m: torch.Tensor, rhs: torch.Tensor):
    """Solve M x = rhs for a PSD M whose null space is the constants (rhs ⊥ 1), by a Cholesky factor of
    S M S + u uᵀ (S = diag(M)^(−1/2), u ∝ S⁻¹1): symmetric diagonal scaling copes with level masses spanning many
    orders of magnitude. Returns the solution and a function solving other right-hand sides with the same factor."""
    d = m.diagonal().clamp(min=torch.finfo(torch.float64).tiny)
    s = d.rsqrt()
    u = d.sqrt()
    u = u / u.norm()
    mn = s[:, None] * m * s[None, :]
    mn += u[:, None] * u[None, :]
    factor, info = torch.linalg.cholesky_ex(mn)
    if int(info) == 0:
        def solve(b):
            y = torch.linalg.solve_triangular(factor, (s * b)[:, None], upper=False)
            return s * torch.linalg.solve_triangular(factor.mT, y, upper=True)[:, 0]
    else:  # numerically indefinite: a least-squares solve of the same system
        def solve(b):
            return s * torch.linalg.lstsq(mn, (s * b)[:, None]).solution[:, 0]
    return solve(rhs), solve


def _warm_start(h, log_q, w, deg, b, p_w, alpha, sweeps: int = 50):
    """Nonlinear Jacobi sweeps for 2(1−α)(L h − b) + α(π_h − p_w) = 0 from the IPO solution: level g solves
    α·Q_g·e^{h_g}/Z + 2(1−α)·deg_g·h_g = 2(1−α)((W h)_g + b_g) + α·p_w,g with the others (and Z) held. Where the
    pairs barely constrain a level (deg_g ≪ α·π_g, the middle levels at large n) this moves h_g by many nats at
    once, which Newton's method would take one nat per step to do."""
    big_b = 2 * (1 - alpha) * deg
    for _ in range(sweeps):
        log_a = math.log(alpha) + log_q - torch.logsumexp(log_q + h, 0)
        r = 2 * (1 - alpha) * (w @ h + b) + alpha * p_w
        hi = torch.where(big_b > 0, r / big_b.clamp(min=1e-300), torch.full_like(r, math.inf))
        # g(x) = log_a + x − log(r − B x): increasing and convex on x < r/B, so Newton from the right converges
        x = torch.minimum(h, hi - 1e-9 * (1 + hi.abs()))
        for _ in range(100):
            room = (r - big_b * x).clamp(min=1e-300)
            gx = log_a + x - torch.log(room)
            step = gx / (1 + big_b / room)
            x_new = torch.minimum(x - step, (x + hi) / 2)
            if float((x_new - x).abs().max()) < 1e-13:
                x = x_new
                break
            x = x_new
        change = float((x - h).abs().max())
        h = x
        if change < 1e-9:
            break
    return h


def _level_minimiser(level_mass: torch.Tensor, n: int, tau: float, alpha: float, tol: float = 1e-13) -> torch.Tensor:
    """h on the levels (up to a constant) minimising α·E[−log π(y_w)] + (1 − α)·E[(h_w − h_l − τ)²]."""
    p = pair_matrix(level_mass, n)
    p_w, p_l = p.sum(1), p.sum(0)
    w = p + p.T
    deg = w.sum(1)
    lap = torch.diag(deg) - w
    b = tau * (p_w - p_l)
    h, _ = _gauge_solve(lap, b)  # IPO: L h = τ(p_w − p_l)
    if alpha == 0:
        return h
    if alpha == 1:  # pure SFT on y_w: π = p_w
        return torch.log(p_w.clamp(min=1e-300)) - torch.log(level_mass)
    log_q = torch.log(level_mass.clamp(min=1e-300))
    h = _warm_start(h, log_q, w, deg, b, p_w, alpha)
    for _ in range(50):  # Newton on the strictly convex objective (modulo constants)
        pi = torch.softmax(log_q + h, 0)
        lap_h = lap @ h
        grad = alpha * (pi - p_w) + 2 * (1 - alpha) * (lap_h - b)
        hess = 2 * (1 - alpha) * lap + alpha * (torch.diag(pi) - pi[:, None] * pi[None, :])
        x, _ = _gauge_solve(hess, grad)
        decrement = float(grad @ x)
        if decrement < tol ** 2:
            break
        step = 1.0  # backtracking on J(h − t·x) − J(h), computed without cancelling large terms
        while step > 1e-12:
            delta = alpha * (step * float(p_w @ x) + float(torch.logsumexp(torch.log(pi) - step * x, 0))) + (
                1 - alpha) * (step ** 2 * float(x @ (lap @ x)) - 2 * step * float(x @ (lap_h - b)))
            if delta <= -0.25 * step * decrement:
                break
            step /= 2
        h = h - step * x
        if decrement < tol and step == 1.0:  # quadratic convergence: the error is now ~ decrement²
            break
    return h


def squared_loss_minimiser(logp_ref: torch.Tensor, rewards: torch.Tensor, n: int, tau: float,
                           alpha: float = 0.0) -> torch.Tensor:
    """Exact log π* [P, K] minimising α·E[−log π(y_w|x)] + (1 − α)·E[(h(y_w) − h(y_l) − τ)²] over all distributions
    on the enumerated support, (y_w, y_l) the (best, worst) of n draws from π_ref (module docstring). α = 0: IPO;
    τ = (n − 1)·H_{n−1}: BoNBoN. Dense linear algebra on the G reward levels of each prompt (G = K = 7,776 on the
    default synthetic task: seconds per prompt)."""
    logp_ref = logp_ref.to(torch.float64)
    out = torch.empty_like(logp_ref)
    for i in range(logp_ref.shape[0]):
        level, _ = reward_levels(rewards[i])
        g = int(level.max()) + 1
        mass = torch.zeros(g, dtype=torch.float64).scatter_add_(0, level, logp_ref[i].exp())
        h = _level_minimiser(mass, int(n), float(tau), float(alpha))
        out[i] = torch.log_softmax(logp_ref[i] + h[level], 0)
    return out


# --------------------------------------------------------------------------- exact population losses (tests)


def response_pair_matrix(logp_ref: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """P [K, K] over responses (one prompt): the level law spread over each level's responses ∝ π_ref (a tied best
    or worst is any of the tied samples, each an independent draw from π_ref restricted to the level)."""
    level, _ = reward_levels(rewards)
    q = logp_ref.to(torch.float64).exp()
    g = int(level.max()) + 1
    mass = torch.zeros(g, dtype=torch.float64).scatter_add_(0, level, q)
    share = q / mass[level]
    return pair_matrix(mass, n)[level][:, level] * share[:, None] * share[None, :]


def pair_objective(logp: torch.Tensor, logp_ref: torch.Tensor, rewards: torch.Tensor, n: int, *, loss: str,
                   beta: float | None = None, tau: float | None = None, alpha: float = 0.0) -> float:
    """The exact population loss of a policy (log-probs [P, K]) averaged over prompts: loss="dpo" (β) or
    loss="squared" (τ, α; α = 0 is IPO). Dense [K, K]: for small supports."""
    total = 0.0
    for i in range(logp.shape[0]):
        p = response_pair_matrix(logp_ref[i], rewards[i], n)
        h = (logp[i] - logp_ref[i]).to(torch.float64)
        diff = h[:, None] - h[None, :]
        if loss == "dpo":
            value = (p * dpo_loss(diff, torch.zeros_like(diff), beta)).sum()
        elif loss == "squared":
            value = (1 - alpha) * (p * (diff - tau) ** 2).sum() - alpha * (p.sum(1) * logp[i].to(torch.float64)).sum()
        else:
            raise ValueError(f"loss must be dpo or squared, got {loss!r}")
        total += float(value)
    return total / logp.shape[0]
