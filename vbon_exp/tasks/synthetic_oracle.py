"""The synthetic task's exact oracle: every response of every prompt enumerated, so π_ref(y|x), the reward CDF F,
π_BoN for any N, the KL-regularised optimum π* ∝ π_ref·exp(r/β), the KL of any policy to each, and the exact
reward–KL and win-rate–KL Pareto frontiers are known exactly (vbon_exp/tasks/synthetic.py builds the task). Beside the
proxy reward r that methods optimise, a gold reward (task.gold) is known exactly too: every policy's exact gold reward
and gold win rate, and the gold curves of BoN, soft BoN and Best-of-Poisson over their parameter
(vbon_exp/tasks/synthetic_gold.py), from which the analysis finds the gold-optimal N, λ and μ (HedgeTune)."""

from __future__ import annotations

import copy
import itertools
import math

import torch

from vbon_exp import bon
from vbon_exp.logprobs import sequence_log_probs
from vbon_exp.modeling import Samples
from vbon_exp.tasks.synthetic_gold import gold_curves, gold_rewards


class SyntheticOracle:
    """Exact distributions over all V^L responses of each prompt, at the task's sampling temperature."""

    def __init__(self, spec, prompts: list[list[int]], reward, temperature: float, gold=None):
        """`spec`: the task's SyntheticSpec (vocabulary, response length); `reward`: its TabularReward (the proxy);
        `gold`: (size s, perturbation P) with gold = r + s·(P − max(r, 0)²/2) (synthetic_gold.gold_rewards), or
        None: gold = r."""
        self.spec, self.prompts, self.temperature = spec, prompts, temperature
        self.responses = torch.tensor(
            list(itertools.product(range(spec.vocab_size), repeat=spec.response_length)), dtype=torch.long
        )  # [K, L]
        k, p = self.responses.shape[0], len(prompts)
        prompt_ids = torch.tensor(prompts, dtype=torch.long)
        self.rewards = torch.stack(
            [reward.score_ids(prompt_ids[i].expand(k, -1)[:, -1], self.responses).float().double() for i in range(p)]
        )  # [P, K], float32 values (as the pipeline sees them), held in float64
        self.gold_rewards = self.rewards  # [P, K] the gold reward (task.gold)
        if gold is not None:
            size, perturbation = gold
            scores = torch.stack([perturbation.score_ids(prompt_ids[i].expand(k, -1)[:, -1], self.responses)
                                  for i in range(p)])
            self.gold_rewards = gold_rewards(self.rewards, scores, size)
        # the run's objective: its own costly gold curves are written too (synthetic_gold.METHOD_CURVES; run.py)
        self.method: str | None = None
        self._ref_logp = None

    @property
    def num_responses(self) -> int:
        return int(self.responses.shape[0])

    def all_pairs(self, prompt_i: int) -> Samples:
        k = self.num_responses
        p_ids = torch.tensor(self.prompts[prompt_i], dtype=torch.long).expand(k, -1).contiguous()
        return Samples(
            torch.full((k,), prompt_i, dtype=torch.long), p_ids, torch.ones_like(p_ids), self.responses,
            torch.ones_like(self.responses),
        )

    def model_log_probs(self, model, batch_size: int = 4096) -> torch.Tensor:
        """Exact log π(y|x) of an autoregressive model at the task temperature, [P, K] float64."""
        # a float64 CPU copy: exact values must not carry float32 round-off (sums to 1 within 1e-12)
        model64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
        rows = [
            sequence_log_probs(model64, self.all_pairs(i), self.temperature, batch_size)
            for i in range(len(self.prompts))
        ]
        return torch.stack(rows)

    def set_reference(self, model) -> None:
        self._ref_logp = self.model_log_probs(model)

    def at_temperature(self, temperature: float, reference) -> SyntheticOracle:
        """The oracle of the same prompts and rewards at another temperature: π_ref (`reference` sampled at
        `temperature`) and every model's exact distribution (`model_log_probs`) at that temperature."""
        other = copy.copy(self)  # responses and rewards are shared: they do not depend on the temperature
        other.temperature = temperature
        other.set_reference(reference)
        return other

    @property
    def ref_log_probs(self) -> torch.Tensor:
        if self._ref_logp is None:
            raise RuntimeError("SyntheticOracle.set_reference(model) must be called first")
        return self._ref_logp

    def bon_log_probs(self, n: int) -> torch.Tensor:
        return bon.bon_log_probs(self.ref_log_probs, self.rewards, n)

    def optimum_log_probs(self, beta: float) -> torch.Tensor:
        return bon.kl_regularised_optimum_log_probs(self.ref_log_probs, self.rewards, beta)

    def transform_optimum_log_probs(self, transform: str, beta: float, n: float | None = None,
                                    exact_scale: str = "beta", t: float = 1.0) -> torch.Tensor:
        """log π* for π* ∝ π_ref·exp(Φ(y)/β), Φ the named reward transform of vbon_exp.bon.REWARD_TRANSFORMS fed
        the exact quantile F_x(r(y)) = P(r ≤ r(y)) under π_ref in place of the cache's F̂: the optimum of KL-RL with
        a calibrated reward (identity gives `optimum_log_probs`; log_cdf with β = 1/(N−1) gives π_BoN for
        continuous rewards, since π_BoN ∝ π_ref·F^(N−1))."""
        log_le, _, _ = bon.log_reward_cdfs(self.ref_log_probs, self.rewards)
        inputs = bon.TransformInputs(self.rewards, log_le, self.ref_log_probs, n, exact_scale, t)
        phi = bon.REWARD_TRANSFORMS[transform](inputs)
        return bon.kl_regularised_optimum_log_probs(self.ref_log_probs, phi, beta)

    def policy_bon_log_probs(self, logp: torch.Tensor, n: float) -> torch.Tensor:
        """Exact log BoN_n(π) of any policy π given its exact log-probs [P, K] (iterative BOND's per-round target:
        best-of-n of the anchor)."""
        return bon.bon_log_probs(logp, self.rewards, n)

    def index_of(self, samples: Samples) -> torch.Tensor:
        """Position of each sampled response in the enumeration (base-V number)."""
        v, length = self.spec.vocab_size, self.spec.response_length
        weights = v ** torch.arange(length - 1, -1, -1)
        return (samples.response_ids.cpu() * weights).sum(-1)

    def metrics(self, logp: torch.Tensor, target_logp: torch.Tensor | None = None) -> dict[str, float]:
        """Exact reward, KL to π_ref, win rate vs one reference sample (ties ½), the same two under the gold reward
        (`exact_gold_reward`, `exact_gold_win_rate`: against one π_ref sample judged by gold) and KL to a target,
        averaged over prompts."""
        p = logp.exp()
        out = {
            "exact_reward": float((p * self.rewards).sum(-1).mean()),
            "exact_kl": float(bon.kl(logp, self.ref_log_probs).mean()),
            "exact_win_rate": float((p * self.win_probability(self.rewards)).sum(-1).mean()),
            "exact_gold_reward": float((p * self.gold_rewards).sum(-1).mean()),
            "exact_gold_win_rate": float((p * self.win_probability(self.gold_rewards)).sum(-1).mean()),
        }
        if target_logp is not None:
            out["exact_kl_to_target"] = float(bon.kl(logp, target_logp).mean())
        return out

    # ----------------------------------------------------------------------- the exact Pareto frontier
    #
    # The frontier of a utility u (the reward r, or the win probability W against one π_ref sample) is
    # U(k) = max {E[u] : KL(π‖π_ref) ≤ k} over ALL policies, E and KL averaged over the prompts as `metrics` does.
    # For k below the greedy policy's KL it is attained by π*_β ∝ π_ref·exp(u/β) with the ONE β whose average KL is
    # k: π*_β maximises the prompt-separable Lagrangian E[u] − β·KL, so any π with KL(π) ≤ KL(π*_β) has
    # E_π[u] ≤ E_π*[u] − β·(KL(π*_β) − KL(π)) ≤ E_π*[u]. A β per prompt would maximise a differently weighted
    # Lagrangian and spend the KL budget worse; the greedy policy (β → 0) gives U(k) = max u beyond its KL.
    # KL(π*_β) decreases in β, so U(k) is found by bisection on log β.

    FRONTIER_UTILITIES = ("reward", "win_rate")

    def win_probability(self, rewards: torch.Tensor) -> torch.Tensor:
        """[P, K]: P(y beats one π_ref sample) under `rewards` (the proxy or the gold), ties ½."""
        f_le, f_lt = bon.reward_cdfs(self.ref_log_probs, rewards)
        return 0.5 * (f_le + f_lt)

    def frontier_utility(self, utility: str) -> torch.Tensor:
        """u(x, y) [P, K]: the reward, or the win probability against a π_ref sample, ties ½ (`exact_win_rate`)."""
        if utility == "reward":
            return self.rewards
        if utility == "win_rate":
            return self.win_probability(self.rewards)
        raise ValueError(f"frontier utility must be one of {self.FRONTIER_UTILITIES}, got {utility!r}")

    def _optimum_points(self, u: torch.Tensor, log_betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(average KL, average E[u]) of π*_β ∝ π_ref·exp(u/β) for each β = exp(log_betas) [B], one β for all
        prompts: two [B] tensors."""
        logp = bon.kl_regularised_optimum_log_probs(self.ref_log_probs, u, log_betas.exp()[:, None, None])
        p = logp.exp()
        return bon.kl(logp, self.ref_log_probs).mean(-1), (p * u).sum(-1).mean(-1)

    def _reference_value(self, u: torch.Tensor) -> float:
        """The average E_π_ref[u]: the frontier at KL 0."""
        return float((self.ref_log_probs.exp() * u).sum(-1).mean())

    def _greedy(self, u: torch.Tensor) -> tuple[float, float]:
        """(average KL, average u) of the β → 0 limit: each prompt's best response (ties share π_ref's mass)."""
        top = u == u.max(-1, keepdim=True).values
        log_mass = torch.logsumexp(self.ref_log_probs.masked_fill(~top, -math.inf), dim=-1)
        return float(-log_mass.mean()), float(u.max(-1).values.mean())

    def _beta_range(self, u: torch.Tensor) -> tuple[float, float]:
        """log β bounds: far beyond the utility's spread (KL(π*) ≈ 0) and far below its smallest gap (≈ greedy)."""
        spread = float((u.max(-1).values - u.min(-1).values).max())
        return math.log(spread) - 30.0, math.log(spread) + 15.0

    def _log_beta_at_kl(self, u: torch.Tensor, kl: float) -> float:
        """log β of the π*_β whose average KL is kl (0 < kl < the greedy KL): bisection, KL(π*_β) ↓ in β. Returns
        the upper end, whose KL is ≤ kl by at most float64 round-off."""
        lo, hi = self._beta_range(u)  # KL(lo) ≈ greedy KL > kl > KL(hi) ≈ 0
        for _ in range(200):  # the interval halves each time: 45 nats of log β to float64 resolution
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            mid_kl, _ = self._optimum_points(u, torch.tensor([mid], dtype=torch.float64))
            lo, hi = (mid, hi) if float(mid_kl) > kl else (lo, mid)
        return hi

    def frontier_at_kl(self, kl: float, utility: str = "reward") -> float:
        """U(kl): the highest exact average utility of any policy with average exact KL ≤ kl (see above)."""
        u = self.frontier_utility(utility)
        greedy_kl, greedy_value = self._greedy(u)
        if kl >= greedy_kl:
            return greedy_value
        if kl <= 0:
            return self._reference_value(u)
        log_beta = torch.tensor([self._log_beta_at_kl(u, kl)], dtype=torch.float64)
        return float(self._optimum_points(u, log_beta)[1])

    def frontier_regret(self, exact: dict) -> dict[str, float]:
        """How far below the exact frontier a policy's exact point is, at its own exact KL: `exact_regret`
        (reward) and `exact_win_rate_regret`, from `metrics`' exact_kl, exact_reward and exact_win_rate. ≥ 0 up
        to round-off for every policy; 0 for π*_β of that utility."""
        return {"exact_regret": self.frontier_at_kl(exact["exact_kl"], "reward") - exact["exact_reward"],
                "exact_win_rate_regret": self.frontier_at_kl(exact["exact_kl"], "win_rate") - exact["exact_win_rate"]}

    def frontier_curves(self, points: int = 200, max_n: float = 2.0**14) -> dict[str, dict[str, list[float]]]:
        """The curves the Pareto plot draws under the exact points: the reward and win-rate frontiers (π*_β of each
        utility over a log-spaced β grid, from near π_ref to near greedy, then the greedy point) and π_BoN over
        real N from 1 to max_n. Each: {"kl": [...], "reward" or "win_rate": [...]}, by increasing KL; π_BoN's
        carries both metrics. Then the gold curves (`gold_*`: synthetic_gold.gold_curves)."""
        utilities = {name: self.frontier_utility(name) for name in self.FRONTIER_UTILITIES}
        curves = {}
        for name, u in utilities.items():
            greedy_kl, greedy_value = self._greedy(u)
            # from KL 1e-4 to 99.9% of the greedy KL: the rest of a log β grid would crowd onto the two ends
            ends = [self._log_beta_at_kl(u, k) for k in (1e-4, 0.999 * greedy_kl)]
            kl, value = self._optimum_points(u, torch.linspace(*ends, points, dtype=torch.float64))
            curves[f"optimum_{name}"] = {"kl": [0.0, *kl.tolist(), greedy_kl],
                                         name: [self._reference_value(u), *value.tolist(), greedy_value]}
        bon_curve: dict[str, list[float]] = {"kl": [], **{name: [] for name in utilities}}
        for n in torch.logspace(0, math.log10(max_n), points // 4, dtype=torch.float64).tolist():
            logp = self.bon_log_probs(n)
            bon_curve["kl"].append(float(bon.kl(logp, self.ref_log_probs).mean()))
            for name, u in utilities.items():
                bon_curve[name].append(float((logp.exp() * u).sum(-1).mean()))
        curves["bon"] = bon_curve
        curves.update(gold_curves(self, self.method))  # the gold curves HedgeTune searches (synthetic_gold.py)
        return curves
