"""Metrics of a policy on the test prompts: reward, KL to π_ref, win rate against the reference, with standard
errors; and on the synthetic task the exact values beside the estimates. Best-of-N can also be measured for every N
at once from a pool of cached π_ref samples (`evaluate_bon_pool`), with no sampling.

Standard errors: where only the policy samples are random (reward, the model's KL estimates) the stratified SE over
prompts (`policies.stratified_mean_se`); where cached reference samples enter (win rates, BoN's k1 KL through F̂,
everything estimated from the BoN pool) the SD of `eval.bootstrap` seeded bootstrap replicates that resample the
policy samples and the caches jointly (vbon_exp/bootstrap.py). The results line's `se_covers` says which, per column."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from vbon_exp import bon
from vbon_exp.bootstrap import bon_pool_replicates, point_and_se, policy_replicates, prompt_table_rows
from vbon_exp.errors import ConfigError, check_choice, check_number
from vbon_exp.kl import KL_ESTIMATORS, primary_estimator
from vbon_exp.policies import BoNPolicy, PooledBoN, stratified_mean_se
from vbon_exp.rewards import score

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """conf `eval:`: evaluation on the task's test prompts."""

    # Policy samples per test prompt for reward, KL and win rate (≥ 1).
    samples_per_prompt: int = 256
    # Sequences per forward pass when computing log-probs for KL estimates (≥ 1).
    batch_size: int = 64
    # Pairs per reward-model call (≥ 1).
    score_batch_size: int = 256
    # Which KL estimate is the `kl` column (the Pareto x-axis; vbon_exp/kl.py): auto (full where the policy has
    # token distributions, else k1) | full | k1 | k3. Every estimate the policy offers is reported as kl_<name>.
    kl_estimator: str = "auto"
    # Temperatures (each > 0) at which the trained policy is evaluated, one results line each (`eval_temperature`),
    # each against π_ref at that temperature (its own reference cache; BoN draws its N from it); null = the
    # sampling temperature alone.
    temperatures: list[float] | None = None
    # Extra reward models that judge the same evaluation samples: names of conf/reward/<name>.yaml (e.g. [vader]);
    # each adds judge/<name>/reward and judge/<name>/win_rate (against π_ref samples scored by that judge).
    judges: list[str] = field(default_factory=list)
    # Bootstrap replicates (seeded) for the SEs into which cached reference samples enter: win rates (judges' too),
    # BoN's k1 KL, everything estimated from the BoN pool. Policy samples and caches are resampled jointly, per
    # prompt. 0 = off: those SEs then cover the policy samples only (the BoN-pool SEs are not estimated: NaN).
    bootstrap: int = 200
    # π_ref samples per test prompt in the BoN pool (M_eval ≥ 2) of `objective=bon objective.estimate=cache`: its own
    # cache (key part purpose=bon_pool), disjoint from the test cache that the win rates compare with; N ≤ M_eval.
    bon_pool_m: int = 256

    def check(self, prefix: str = "eval") -> None:
        check_number(f"{prefix}.samples_per_prompt", self.samples_per_prompt, integer=True, minimum=1)
        check_number(f"{prefix}.bootstrap", self.bootstrap, integer=True, minimum=0)
        check_number(f"{prefix}.bon_pool_m", self.bon_pool_m, integer=True, minimum=2)
        check_number(f"{prefix}.batch_size", self.batch_size, integer=True, minimum=1)
        check_number(f"{prefix}.score_batch_size", self.score_batch_size, integer=True, minimum=1)
        check_choice(f"{prefix}.kl_estimator", self.kl_estimator, ("auto", *KL_ESTIMATORS))
        if self.temperatures is not None:
            if not self.temperatures:
                raise ConfigError(f"{prefix}.temperatures is empty: list one temperature or more, or null (the "
                                  "sampling temperature)")
            for i, t in enumerate(self.temperatures):
                check_number(f"{prefix}.temperatures[{i}]", t, exclusive_min=0)
            _no_repeats(f"{prefix}.temperatures", self.temperatures)
        _no_repeats(f"{prefix}.judges", self.judges)

    def memory_bytes(self, num_prompts: int, sequence_tokens: int, response_tokens: int, vocab_size: int) -> int:
        """At least what evaluation holds: every sample's ids and masks (int64), and one KL batch's two float32
        log-distributions [batch, response length, vocabulary]."""
        samples = num_prompts * self.samples_per_prompt * sequence_tokens * 2 * 8
        logits = 2 * self.batch_size * response_tokens * vocab_size * 4
        return samples + logits


def _no_repeats(key: str, values) -> None:
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    if repeated:
        raise ConfigError(f"{key} lists {repeated} more than once")


POLICY_SAMPLES = "policy samples"


def evaluate(
    policy, task, test_cache, *, samples_per_prompt: int, seed: int, batch_size: int = 64, target_log_probs=None,
    kl_estimator: str = "auto", judges=None, score_batch_size: int = 256, bootstrap: int = 0,
) -> dict[str, float]:
    """Sample `samples_per_prompt` responses per test prompt from `policy` and measure them.

    `target_log_probs` (synthetic task only): the exact distribution the objective aims at, for
    `exact_kl_to_target`. `judges`: name -> (reward, reference cache scored by that reward), see `judge_metrics`.
    `bootstrap`: replicates for the SEs into which a reference cache enters (0: policy samples only)."""
    device = next(task.reference.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    samples = policy.sample(task.test_prompts, samples_per_prompt, generator, desc="evaluation samples")
    pidx = samples.prompt_index.cpu()
    out: dict[str, float] = {"eval_samples": float(len(samples))}
    out["reward"], out["reward_se"] = stratified_mean_se(samples.rewards, pidx)

    terms = policy.kl_terms(samples, test_cache, batch_size)
    for name, values in terms.items():
        out[f"kl_{name}"], out[f"kl_{name}_se"] = stratified_mean_se(values, pidx)
    primary = primary_estimator(kl_estimator, terms)
    if primary not in terms:
        raise ConfigError(f"eval.kl_estimator={kl_estimator} is not available for this policy (it offers "
                          f"{sorted(terms)})")
    out["kl"], out["kl_se"], out["kl_estimator"] = out[f"kl_{primary}"], out[f"kl_{primary}_se"], primary
    if isinstance(policy, BoNPolicy):
        out["kl_analytic"] = policy.analytic_kl()

    win = test_cache.win_prob(pidx, samples.rewards)
    out["win_rate"], out["win_rate_se"] = stratified_mean_se(win, pidx)
    covers = {f"{name}_se": POLICY_SAMPLES for name in ("reward", "win_rate", *(f"kl_{t}" for t in terms))}
    if test_cache.first_rewards is not None:
        beats_first = (samples.rewards.cpu().double() > test_cache.first_rewards[pidx]).double()
        out["win_rate_first"], out["win_rate_first_se"] = stratified_mean_se(beats_first, pidx)
        covers["win_rate_first_se"] = POLICY_SAMPLES
    if bootstrap:
        out.update(_cache_bootstrap_ses(policy, samples, test_cache, bootstrap, seed, covers))
    out["kl_se"], covers["kl_se"] = out[f"kl_{primary}_se"], covers[f"kl_{primary}_se"]
    out["response_length"] = float(samples.response_mask.sum(-1).float().mean())
    judged, judge_covers = judge_metrics(samples, judges or {}, score_batch_size, bootstrap, seed)
    out.update(judged)
    out["se_covers"] = {**covers, **judge_covers}

    if task.oracle is not None:
        out.update(task.oracle.metrics(policy.exact_log_probs(task.oracle), target_log_probs))
    out["eval_wall_s"] = time.perf_counter() - t0
    return out


def judge_metrics(samples, judges: dict, score_batch_size: int = 256, bootstrap: int = 0,
                  seed: int = 0) -> tuple[dict[str, float], dict[str, str]]:
    """Each judge's view of the same evaluation samples: `judge/<name>/reward` (the judge's mean score) and
    `judge/<name>/win_rate` (the probability that a sample beats a π_ref sample in the judge's eyes, ties ½), each
    with its standard error. `judges`: name -> (reward, cache), where the cache holds π_ref samples of the same
    prompts and sampling settings scored by that judge: the win rate compares like with like, never a judge's score
    with the training reward's. With `bootstrap` replicates the win rate's SE covers that cache too (the same draws
    as the training reward's win rate). Returns the metrics and what each SE covers."""
    pidx = samples.prompt_index.cpu()
    out: dict[str, float] = {}
    covers: dict[str, str] = {}
    for name, (judge, cache) in judges.items():
        rewards = score(judge, samples, score_batch_size, what=f"evaluation samples (judge {name})")
        out[f"judge/{name}/reward"], out[f"judge/{name}/reward_se"] = stratified_mean_se(rewards, pidx)
        win = cache.win_prob(pidx, rewards)
        out[f"judge/{name}/win_rate"], out[f"judge/{name}/win_rate_se"] = stratified_mean_se(win, pidx)
        covers[f"judge/{name}/reward_se"] = covers[f"judge/{name}/win_rate_se"] = POLICY_SAMPLES
        if bootstrap:
            rows = prompt_table_rows(cache.sorted_rewards, cache.lengths)
            replicas = policy_replicates(rewards, pidx, rows, None, bootstrap, _bootstrap_generator(seed))
            out[f"judge/{name}/win_rate_se"] = float(point_and_se(replicas["win_rate"])[1])
            covers[f"judge/{name}/win_rate_se"] = _covers("win_rate", bootstrap, POLICY_SAMPLES)
    return out, covers


def _cache_bootstrap_ses(policy, samples, test_cache, replicates: int, seed: int, covers: dict) -> dict[str, float]:
    """Bootstrap SEs of the estimates that read the test cache (win rates; BoN's k1 through F̂), and what they cover."""
    bon_n = policy.n if isinstance(policy, BoNPolicy) else None
    rows = prompt_table_rows(test_cache.sorted_rewards, test_cache.lengths)
    replicas = policy_replicates(samples.rewards, samples.prompt_index, rows, test_cache.first_rewards, replicates,
                                 _bootstrap_generator(seed), bon_n=bon_n)
    out = {}
    for name, values in replicas.items():
        out[f"{name}_se"] = float(point_and_se(values)[1])
        covers[f"{name}_se"] = _covers(name, replicates, POLICY_SAMPLES)
    return out


# what of the test cache each bootstrapped estimate reads, besides its own samples (policy samples or the BoN pool)
CACHE_SOURCES = {"win_rate": "reference cache", "kl_k1": "reference cache",
                 "win_rate_first": "first reference sample, redrawn from the reference cache"}


def _bootstrap_generator(seed: int) -> torch.Generator:
    """The bootstrap's own stream (the evaluation's draws do not move), the same for every estimate of one
    evaluation: a judge identical to the training reward gets the training win rate's SE exactly."""
    return torch.Generator().manual_seed(seed + 7919)


def _covers(name: str, replicates: int, samples: str) -> str:
    """What the bootstrap SE of estimate `name` covers: `samples`, and the part of the test cache that it reads."""
    if not replicates:
        return "not estimated (eval.bootstrap=0)"
    sources = " + ".join([samples, *([CACHE_SOURCES[name]] if name in CACHE_SOURCES else [])])
    return f"{sources} (bootstrap B={replicates})"


def evaluate_bon_pool(policy: PooledBoN, task, test_cache, *, seed: int, bootstrap: int,
                      kl_estimator: str = "auto", with_target: bool = True) -> list[dict]:
    """Best-of-N for every N of `policy.ns` from its pool of cached π_ref rewards: one results dict per N, no
    sampling (the estimators: bootstrap.bon_pool_replicates). The pool is disjoint from `test_cache`, which the win
    rates and F̂ (kl_k1) read. `kl` is the tie-aware KL (`eval.kl_estimator=auto`) or k1. `with_target` false (an
    evaluation temperature other than the one BoN's target is defined at): no target metrics."""
    t0 = time.perf_counter()
    primary = "tie_aware" if kl_estimator == "auto" else kl_estimator
    if primary not in POOL_KL_ESTIMATORS:
        raise ConfigError(f"eval.kl_estimator={kl_estimator} is not available for BoN from the pool (it offers "
                          f"{list(POOL_KL_ESTIMATORS)})")
    pool = policy.pool
    replicas = bon_pool_replicates(
        prompt_table_rows(pool.sorted_rewards, pool.lengths),
        prompt_table_rows(test_cache.sorted_rewards, test_cache.lengths), test_cache.first_rewards, policy.ns,
        bootstrap, _bootstrap_generator(seed))
    estimates = {name: point_and_se(values) for name, values in replicas.items()}
    tied = float(estimates.pop("tied_fraction")[0])
    points = []
    for j, n in enumerate(policy.ns):
        out = {"n": n, "beta": bon.beta_from_n(n) if n > 1 else None, "bon_pool_m": pool.m,
               "eval_samples": float(pool.lengths.sum()), "bon_pool_tied_fraction": tied,
               "kl_analytic": bon.kl_bon_analytic(n), "kl_estimator": primary}
        for name, (point, se) in estimates.items():
            out[name], out[f"{name}_se"] = float(point[j]), float(se[j])
        out["kl"], out["kl_se"] = out[f"kl_{primary}"], out[f"kl_{primary}_se"]
        covers = {f"{name}_se": _covers(name, bootstrap, "BoN pool") for name in estimates}
        out["se_covers"] = {**covers, "kl_se": covers[f"kl_{primary}_se"]}
        if task.oracle is not None:
            out.update(_exact_bon(task.oracle, policy.exact_log_probs(task.oracle, n), with_target))
        points.append(out)
    return [{**p, "eval_wall_s": time.perf_counter() - t0} for p in points]


# the KL estimates of BoN from the pool (kl_<name> columns); `auto` takes the tie-aware one
POOL_KL_ESTIMATORS = ("tie_aware", "k1")


def _exact_bon(oracle, exact_log_probs, with_target: bool) -> dict[str, float]:
    """The oracle's exact metrics of π_BoN, and with `with_target` its own target (KL 0, as the sampled path's) and
    KL(π_ref ‖ π_BoN)."""
    if not with_target:
        return oracle.metrics(exact_log_probs)
    out = oracle.metrics(exact_log_probs, exact_log_probs)
    out["exact_kl_to_target_init"] = oracle.metrics(oracle.ref_log_probs, exact_log_probs)["exact_kl_to_target"]
    return out
