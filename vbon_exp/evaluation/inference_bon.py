"""Every evaluated policy under inference-time best-of-N′ (`eval.inference_n`; InfAlign: Balashankar et al. 2024,
*InfAlign: Inference-aware language model alignment*, arXiv:2412.19792): a policy π is often deployed behind BoN, so
what counts is BoN(π), not π. For each N′ a sampled policy's results line gets

- `inference_reward_<N′>`: E[r] of BoN_N′(π), the best of N′ policy samples;
- `inference_win_rate_<N′>`: P(BoN_N′(π) beats BoN_N′(π_ref)), ties ½ (InfAlign's inference-time win rate: both
  sides best of N′);
- `inference_win_rate_vs_ref_<N′>`: P(BoN_N′(π) beats one π_ref sample), ties ½ (`win_rate` at N′ = 1);
- `inference_worst_reward_<N′>`: E[r] of the worst of N′ policy samples;

each with `_se`, and on a task with an exact oracle `exact_` twins. N′ = 1 is π itself.

Estimators. The policy's pool is its evaluation samples (eval.samples_per_prompt per test prompt, K of them, no new
draws); π_ref's is the BoN pool (cache "bon_pool", eval.bon_pool_m = M per prompt, disjoint from the test cache).
Per prompt, with the policy's rewards sorted s_(1) ≤ … ≤ s_(K), the best of a random N′-subset is s_(k) with
probability C(k−1, N′−1)/C(K, N′) and the worst with C(K−k, N′−1)/C(K, N′) (`bon_order_weights`, reversed):
Σ_k w_k·h(s_(k)) averages h over all C(K, N′) subsets, a U-statistic (Hoeffding 1948), unbiased for
E[h(best of N′)]. For the inference-time win rate h is itself unbiased and independent of the policy's
pool: the best of a random N′-subset of π_ref's pool lies below s in C(#{pool < s}, N′)/C(M, N′) of the subsets and
at or below it in C(#{pool ≤ s}, N′)/C(M, N′), so
    h(s) = ½·(C(#{pool < s}, N′) + C(#{pool ≤ s}, N′))/C(M, N′)
is unbiased for F⁻(s)^N′ + ½·(F(s)^N′ − F⁻(s)^N′) (F the π_ref reward CDF; F⁻ with <): the probability that s beats
the best of N′ π_ref samples, ties ½. The win rate against one π_ref sample uses the test cache (as `win_rate`).
Ties among the policy's samples do not matter: the best (worst) reward of a subset does not depend on tie-breaking.

SEs: the seeded bootstrap (`eval.bootstrap` replicates; 0: NaN) resampling, per prompt and jointly, the policy's
samples, the BoN pool and the test cache (vbon_exp/evaluation/statistics.py: `se_covers` names what each covers).

Exact values (synthetic task): BoN_N′(π) is vbon_exp.bon.bon_log_probs of π's exact log-probs (ties shared in
proportion to π); the worst of N′ is best of N′ on −r; against BoN_N′(π_ref) a response of reward r wins with
probability ½·(F(r)^N′ + F⁻(r)^N′), F and F⁻ π_ref's exact CDFs (bon.reward_cdfs).

Policies estimated from the BoN pool (BoN itself with objective.estimate=cache, soft and rejection BoN) get none of
these columns: BoN_N′ of BoN_N is BoN_{N·N′}, but its win rate against BoN_N′(π_ref) from one pool needs disjoint
subsets of that pool, and the relatives' inference-time law is not a pool reweighting: left out, not approximated."""

from __future__ import annotations

import math

import torch

from vbon_exp import bon
from vbon_exp.bootstrap import ResampledCache, point_and_se, prompt_table_rows, resample_indices
from vbon_exp.errors import ConfigError
from vbon_exp.evaluation.bon_pool import BON_POOL
from vbon_exp.evaluation.statistics import POLICY_SAMPLES, bootstrap_generator
from vbon_exp.pool_estimators import bon_order_weights
from vbon_exp.results import INFERENCE_METRICS, inference_column

# what of the caches each bootstrapped estimate reads besides the policy's samples
SOURCES = {"reward": (), "worst_reward": (), "win_rate": ("BoN pool",), "win_rate_vs_ref": ("reference cache",)}


# ---------------------------------------------------------------------------------------------------- pool estimators


def best_of_weights(k: int, ns) -> torch.Tensor:
    """[len(ns), K]: the probability that the k-th lowest of a pool of K is the best of a random N′-subset."""
    return bon_order_weights(k, ns)


def worst_of_weights(k: int, ns) -> torch.Tensor:
    """[len(ns), K]: the probability that the k-th lowest is the worst of a random N′-subset, C(K−k, N′−1)/C(K, N′):
    the best-of weights read from the top (the k-th lowest is the (K+1−k)-th highest)."""
    return bon_order_weights(k, ns).flip(-1)


def subset_fraction(count: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """C(count, n)/C(m, n): the fraction of the n-subsets of a pool of m that lie within `count` given members (0
    where count < n), elementwise; in log space (lgamma), so large pools never build huge integers."""
    count = count.to(torch.float64)
    enough = count >= n
    safe = torch.where(enough, count, torch.full_like(count, float(n)))
    log_ratio = (torch.lgamma(safe + 1) - torch.lgamma(safe - n + 1)
                 - (math.lgamma(m + 1) - math.lgamma(m - n + 1)))  # C(c, n)/C(m, n): the n! cancels
    return torch.where(enough, torch.exp(log_ratio), torch.zeros_like(count))


def win_against_best_of(less: torch.Tensor, less_equal: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The unbiased pool estimate of P(s beats the best of n π_ref samples), ties ½, from #{pool < s} and
    #{pool ≤ s} in a pool of m (module docstring)."""
    return 0.5 * (subset_fraction(less, n, m) + subset_fraction(less_equal, n, m))


def inference_replicates(rewards: torch.Tensor, prompt_index: torch.Tensor, pool_rows: list[torch.Tensor],
                         cache_rows: list[torch.Tensor], ns: list[int], replicates: int,
                         generator: torch.Generator) -> dict[str, torch.Tensor]:
    """[1 + B, len(ns)] replicates of each INFERENCE_METRICS estimate, prompt means: row 0 the estimates, then each
    prompt's policy samples, BoN pool (`pool_rows[p]`, sorted) and test cache (`cache_rows[p]`) resampled jointly."""
    rewards, prompt_index = rewards.detach().cpu().to(torch.float64), prompt_index.cpu()
    out: dict[str, list[torch.Tensor]] = {metric: [] for metric in INFERENCE_METRICS}
    weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for p in torch.unique(prompt_index).tolist():
        own = torch.sort(rewards[prompt_index == p]).values
        k, m = len(own), len(pool_rows[p])
        check_pool_sizes(ns, k, m, p)
        best, worst = weights.setdefault(k, (best_of_weights(k, ns), worst_of_weights(k, ns)))
        values = own[resample_indices(k, replicates, generator)]  # [R, K], each row sorted
        pool = ResampledCache(pool_rows[p], resample_indices(m, replicates, generator))
        cache = ResampledCache(cache_rows[p], resample_indices(len(cache_rows[p]), replicates, generator))
        less, less_equal = pool.counts(values)
        out["reward"].append(values @ best.T)
        out["worst_reward"].append(values @ worst.T)
        out["win_rate_vs_ref"].append(cache.win_prob(values) @ best.T)
        out["win_rate"].append(torch.stack(
            [(win_against_best_of(less, less_equal, n, m) * best[j]).sum(-1) for j, n in enumerate(ns)], dim=-1))
    return {metric: torch.stack(rows).mean(0) for metric, rows in out.items()}


def check_pool_sizes(ns: list[int], k: int, m: int, prompt: int) -> None:
    """N′ cannot exceed either pool (eval.check says so up front; a prompt's pool may still be short)."""
    for key, size, what in (("eval.samples_per_prompt", k, "policy samples"), ("eval.bon_pool_m", m, "BoN pool")):
        if max(ns) > size:
            raise ConfigError(f"eval.inference_n={ns}: N′ = {max(ns)} exceeds the {size} {what} of test prompt "
                              f"{prompt}: raise {key} or lower N′")


# ---------------------------------------------------------------------------------------------------- exact values


def exact_best_of(logp: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Exact log BoN_n(π) [P, K] of a policy's exact log-probs (ties shared in proportion to π); a response π never
    draws stays at −inf (bon_log_probs would give 0·(−inf) there)."""
    logp = logp.to(torch.float64)
    return torch.where(torch.isneginf(logp), logp, bon.bon_log_probs(logp, rewards, n))


def exact_inference(logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor,
                    ns: list[int]) -> dict[str, float]:
    """`exact_inference_<metric>_<N′>` of a policy with exact log-probs `logp` [P, K] against π_ref (`ref_logp`)
    on rewards [P, K], averaged over prompts (module docstring)."""
    rewards = rewards.to(torch.float64)
    f_le, f_lt = bon.reward_cdfs(ref_logp, rewards)
    out = {}
    for n in ns:
        best = exact_best_of(logp, rewards, n).exp()
        worst = exact_best_of(logp, -rewards, n).exp()  # the worst of N′ on r is the best of N′ on −r
        values = {"reward": best * rewards, "worst_reward": worst * rewards,
                  "win_rate": best * 0.5 * (f_le**n + f_lt**n), "win_rate_vs_ref": best * 0.5 * (f_le + f_lt)}
        for metric, terms in values.items():
            out[f"exact_{inference_column(metric, n)}"] = float(terms.sum(-1).mean())
    return out


# ---------------------------------------------------------------------------------------------------- the columns


def covers(metric: str, replicates: int) -> str:
    """What the bootstrap SE of `metric` covers."""
    if not replicates:
        return "not estimated (eval.bootstrap=0)"
    return " + ".join([POLICY_SAMPLES, *SOURCES[metric]]) + f" (bootstrap B={replicates})"


def inference_bon_metrics(samples, ctx, exact_log_probs: torch.Tensor | None = None) -> tuple[dict, dict]:
    """(the inference-time columns of a sampled policy's results line, what each SE covers) from its evaluation
    `samples` and the caches of `ctx` (EvalContext: "test" and the BoN pool); the exact twins where the task has an
    oracle and the policy's `exact_log_probs` are given."""
    ns = ctx.settings.inference_ns()
    if BON_POOL not in ctx.caches:
        raise ValueError(f"inference-time BoN reads π_ref's BoN pool: the evaluation's caches need {BON_POOL!r} "
                         "(SampledPolicy.eval_caches asks for it when eval.inference_n is on)")
    pool, test_cache, replicates = ctx.caches[BON_POOL], ctx.test_cache, ctx.settings.bootstrap
    replicas = inference_replicates(
        samples.rewards, samples.prompt_index, prompt_table_rows(pool.sorted_rewards, pool.lengths),
        prompt_table_rows(test_cache.sorted_rewards, test_cache.lengths), ns, replicates,
        bootstrap_generator(ctx.seed))
    out: dict = {"inference_bon_pool_m": pool.m}
    se_covers = {}
    for metric, values in replicas.items():
        point, se = point_and_se(values)
        for j, n in enumerate(ns):
            column = inference_column(metric, n)
            out[column], out[f"{column}_se"] = float(point[j]), float(se[j])
            se_covers[f"{column}_se"] = covers(metric, replicates)
    oracle = ctx.task.oracle
    if oracle is not None and exact_log_probs is not None:
        out.update(exact_inference(exact_log_probs, oracle.ref_log_probs, oracle.rewards, ns))
    return out, se_covers
