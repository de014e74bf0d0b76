"""Metrics of a policy on the test prompts: reward, KL to π_ref, win rate against the reference, with standard
errors; and on the synthetic task the exact values beside the estimates."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from vbon_exp.errors import ConfigError, check_choice, check_number
from vbon_exp.kl import KL_ESTIMATORS, primary_estimator
from vbon_exp.policies import BoNPolicy, stratified_mean_se
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

    def check(self, prefix: str = "eval") -> None:
        check_number(f"{prefix}.samples_per_prompt", self.samples_per_prompt, integer=True, minimum=1)
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


def evaluate(
    policy, task, test_cache, *, samples_per_prompt: int, seed: int, batch_size: int = 64, target_log_probs=None,
    kl_estimator: str = "auto", judges=None, score_batch_size: int = 256,
) -> dict[str, float]:
    """Sample `samples_per_prompt` responses per test prompt from `policy` and measure them.

    `target_log_probs` (synthetic task only): the exact distribution the objective aims at, for
    `exact_kl_to_target`. `judges`: name -> (reward, reference cache scored by that reward), see `judge_metrics`."""
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
    out["response_length"] = float(samples.response_mask.sum(-1).float().mean())
    out.update(judge_metrics(samples, judges or {}, score_batch_size))

    if task.oracle is not None:
        out.update(task.oracle.metrics(policy.exact_log_probs(task.oracle), target_log_probs))
    out["eval_wall_s"] = time.perf_counter() - t0
    return out


def judge_metrics(samples, judges: dict, score_batch_size: int = 256) -> dict[str, float]:
    """Each judge's view of the same evaluation samples: `judge/<name>/reward` (the judge's mean score) and
    `judge/<name>/win_rate` (the probability that a sample beats a π_ref sample in the judge's eyes, ties ½), each
    with its standard error. `judges`: name -> (reward, cache), where the cache holds π_ref samples of the same
    prompts and sampling settings scored by that judge: the win rate compares like with like, never a judge's score
    with the training reward's."""
    pidx = samples.prompt_index.cpu()
    out: dict[str, float] = {}
    for name, (judge, cache) in judges.items():
        rewards = score(judge, samples, score_batch_size, what=f"evaluation samples (judge {name})")
        out[f"judge/{name}/reward"], out[f"judge/{name}/reward_se"] = stratified_mean_se(rewards, pidx)
        win = cache.win_prob(pidx, rewards)
        out[f"judge/{name}/win_rate"], out[f"judge/{name}/win_rate_se"] = stratified_mean_se(win, pidx)
    return out
