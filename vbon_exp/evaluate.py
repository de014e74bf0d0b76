"""Metrics of a policy on the test prompts: reward, KL to π_ref, win rate against the reference, with standard
errors; and on the synthetic task the exact values beside the estimates."""

from __future__ import annotations

import logging
import time

import torch

from vbon_exp.policies import BoNPolicy, stratified_mean_se

log = logging.getLogger(__name__)

# Which KL estimate is the Pareto x-axis: the full-vocabulary per-token KL where token probabilities exist
# (the seed code's logged KL, lowest variance), else k1.
PRIMARY_KL = ("full", "k1")


def evaluate(
    policy, task, test_cache, *, samples_per_prompt: int, seed: int, batch_size: int = 64, target_log_probs=None
) -> dict[str, float]:
    """Sample `samples_per_prompt` responses per test prompt from `policy` and measure them.

    `target_log_probs` (synthetic task only): the exact distribution the objective aims at, for
    `exact_kl_to_target`."""
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
    primary = next(name for name in PRIMARY_KL if name in terms)
    out["kl"], out["kl_se"], out["kl_estimator"] = out[f"kl_{primary}"], out[f"kl_{primary}_se"], primary
    if isinstance(policy, BoNPolicy):
        out["kl_analytic"] = policy.analytic_kl()

    win = test_cache.win_prob(pidx, samples.rewards)
    out["win_rate"], out["win_rate_se"] = stratified_mean_se(win, pidx)
    out["response_length"] = float(samples.response_mask.sum(-1).float().mean())

    if task.oracle is not None:
        out.update(task.oracle.metrics(policy.exact_log_probs(task.oracle), target_log_probs))
    out["eval_wall_s"] = time.perf_counter() - t0
    return out
