"""Policies that draw samples (a model, BoN by sampling, the sampled relatives of BoN) share one evaluation: sample
`eval.samples_per_prompt` responses per test prompt, score them, and measure them against the test cache.

Reward and the model's KL estimates have the stratified SE over prompts; win rates (and BoN's k1 KL, whose F̂ is
the cache's) have bootstrap SEs that cover the cache too (vbon_exp/evaluation/statistics.py). On a task with an
exact oracle, the policy's exact distribution gives the exact values beside the estimates. With eval.inference_n,
the same samples give the policy under inference-time best-of-N′ (vbon_exp/evaluation/inference_bon.py)."""

from __future__ import annotations

import time

import torch

from vbon_exp.errors import ConfigError
from vbon_exp.evaluation.inference_bon import inference_bon_metrics
from vbon_exp.evaluation.judges import judge_metrics
from vbon_exp.evaluation.policy import EvalContext, EvaluatedPolicy, PolicyPoint
from vbon_exp.evaluation.samples_table import sample_rows
from vbon_exp.evaluation.statistics import POLICY_SAMPLES, cache_bootstrap_ses, stratified_mean_se
from vbon_exp.kl import primary_estimator
from vbon_exp.modeling import Samples


class SampledPolicy(EvaluatedPolicy):
    """A policy measured on samples it draws. Subclasses give `sample`, `measure` and `exact_log_probs`."""

    # BoN's N for the bootstrap of its k1 KL (None: the KL does not read the cache)
    bootstrap_bon_n: int | None = None

    def sample(self, prompts: list[list[int]], n: int, generator, desc: str | None = None) -> Samples:
        """`n` scored responses per prompt, grouped by prompt in prompt order."""
        raise NotImplementedError

    def measure(self, samples: Samples, ctx: EvalContext) -> dict:
        """Per-sample measurements [B]: {"kl": {estimator name: term whose mean estimates KL(policy‖π_ref)},
        "logp_policy": log π(y|x) (or an estimate, or None), "logp_ref": log π_ref(y|x) (or None)}."""
        raise NotImplementedError

    def extra_metrics(self) -> dict:
        """Results-line columns of the policy itself (BoN: its analytic KL)."""
        return {}

    def exact_log_probs(self, oracle) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def eval_caches(cls, settings) -> dict[str, int]:
        return settings.inference_caches()  # π_ref's BoN pool where eval.inference_n is on

    def evaluate(self, ctx: EvalContext) -> list[PolicyPoint]:
        return [evaluate_sampled(self, ctx)]


def evaluate_sampled(policy: SampledPolicy, ctx: EvalContext) -> PolicyPoint:
    """The metrics of a sampled policy and the rows of its samples (module docstring)."""
    task, settings = ctx.task, ctx.settings
    device = next(task.reference.parameters()).device
    generator = torch.Generator(device=device).manual_seed(ctx.seed)
    t0 = time.perf_counter()
    samples = policy.sample(task.test_prompts, settings.samples_per_prompt, generator, desc="evaluation samples")
    pidx = samples.prompt_index.cpu()
    out: dict = {"eval_samples": float(len(samples))}
    out["reward"], out["reward_se"] = stratified_mean_se(samples.rewards, pidx)
    measured = policy.measure(samples, ctx)
    terms = measured["kl"]
    for name, values in terms.items():
        out[f"kl_{name}"], out[f"kl_{name}_se"] = stratified_mean_se(values, pidx)
    primary = primary_estimator(settings.kl_estimator, terms)
    if primary not in terms:
        raise ConfigError(f"eval.kl_estimator={settings.kl_estimator} is not available for this policy (it offers "
                          f"{sorted(terms)})")
    out["kl"], out["kl_estimator"] = out[f"kl_{primary}"], primary
    out.update(policy.extra_metrics())
    se_covers = {f"{name}_se": POLICY_SAMPLES for name in ("reward", "win_rate", *(f"kl_{t}" for t in terms))}
    out.update(win_rates(samples, ctx.test_cache, se_covers))
    if settings.bootstrap:
        out.update(cache_bootstrap_ses(samples.rewards, samples.prompt_index, ctx.test_cache, settings.bootstrap,
                                       ctx.seed, se_covers, bon_n=policy.bootstrap_bon_n))
    out["kl_se"], se_covers["kl_se"] = out[f"kl_{primary}_se"], se_covers[f"kl_{primary}_se"]
    out["response_length"] = float(samples.response_mask.sum(-1).float().mean())
    judged, judge_covers, judge_scores = judge_metrics(samples, ctx.judges, settings.score_batch_size,
                                                       settings.bootstrap, ctx.seed)
    out.update(judged)
    out["se_covers"] = {**se_covers, **judge_covers}
    oracle = task.oracle
    exact_log_probs = policy.exact_log_probs(oracle) if oracle is not None else None  # computed once
    if oracle is not None:
        target = ctx.target_log_probs(oracle) if ctx.target_log_probs is not None else None
        out.update(oracle.metrics(exact_log_probs, target))
        if target is not None:
            out["exact_kl_to_target_init"] = oracle.metrics(oracle.ref_log_probs, target)["exact_kl_to_target"]
    if settings.inference_ns():  # the policy behind best-of-N′ at inference, from the same samples
        inference, inference_covers = inference_bon_metrics(samples, ctx, exact_log_probs)
        out.update(inference)
        out["se_covers"].update(inference_covers)
    out["eval_wall_s"] = time.perf_counter() - t0
    rows = sample_rows(task, samples, kl_term=terms[primary], kl_estimator=primary,
                       logp_policy=measured.get("logp_policy"), logp_ref=measured.get("logp_ref"),
                       judge_scores=judge_scores, max_prompts=settings.samples)
    return PolicyPoint(out, rows)


def win_rates(samples: Samples, test_cache, se_covers: dict) -> dict:
    """`win_rate` (against every cached test reward, ties ½) and, where the cache kept each prompt's first draw,
    `win_rate_first` (against that draw, ties lose: the seed code's), each with its stratified SE."""
    pidx = samples.prompt_index.cpu()
    out = {}
    win = test_cache.win_prob(pidx, samples.rewards)
    out["win_rate"], out["win_rate_se"] = stratified_mean_se(win, pidx)
    if test_cache.first_rewards is not None:
        beats_first = (samples.rewards.cpu().double() > test_cache.first_rewards[pidx]).double()
        out["win_rate_first"], out["win_rate_first_se"] = stratified_mean_se(beats_first, pidx)
        se_covers["win_rate_first_se"] = POLICY_SAMPLES
    return out
