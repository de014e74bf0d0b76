"""Evaluation of a run's policy, at each evaluation temperature in turn: the caches at that temperature, the policy's
own evaluation (vbon_exp/evaluation/policy.py), then what every results line gets whatever the policy — its distance
to π_BoN where the objective aims at it, its regret below the exact frontier on a task with an oracle, the stage's
timings — and the samples of every temperature in samples.parquet (and a wandb Table)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from vbon_exp import bon
from vbon_exp.evaluation.policy import EvalContext, EvaluatedPolicy
from vbon_exp.evaluation.samples_table import write_samples
from vbon_exp.meters import GENERATION, SCORING
from vbon_exp.results import write_exact_frontier
from vbon_exp.settings.eval import EvalConfig  # noqa: F401  (its settings; re-exported)

log = logging.getLogger(__name__)


class StageMeter:
    """Throughput of one pipeline stage for the results line and wandb: `<stage>_s` (wall seconds),
    `<stage>_gen_tok_s` (tokens sampled per second of sampling) and `<stage>_score_samples_s` (pairs scored per
    second of scoring), from the process-wide sampling and scoring meters."""

    def __init__(self, stage: str):
        self.stage, self.t0 = stage, time.perf_counter()
        self.gen, self.score = GENERATION.snapshot(), SCORING.snapshot()

    def stop(self) -> dict:
        gen, score = GENERATION.since(self.gen), SCORING.since(self.score)
        out = {f"{self.stage}_s": time.perf_counter() - self.t0}
        if gen["rate"] is not None:
            out[f"{self.stage}_gen_tok_s"] = gen["rate"]
        if score["rate"] is not None:
            out[f"{self.stage}_score_samples_s"] = score["rate"]
        return out


@dataclass
class Target:
    """What the objective aims at, for the results line: its exact target's log-probs on a task with an oracle
    (oracle -> log-probs, or None without one) and π_BoN's N where it aims at π_BoN (None elsewhere)."""

    log_probs: Optional[Callable] = None
    bon_n: Optional[float] = None


def evaluate_policy(policy: EvaluatedPolicy, *, task, settings: EvalConfig, seed: int, temperatures: list[float],
                    train_temperature: float, caches_at: Callable, judges: dict, target: Target,
                    run_dir: Optional[Path] = None, exact_spec: Optional[dict] = None, tracker=None,
                    columns: Optional[dict] = None):
    """The results lines of `policy`, temperature by temperature (a generator: each line is ready to write as soon
    as its temperature is measured). At each evaluation temperature T the policy samples at T, its KL is to π_ref at
    T, its win rates are against π_ref samples at T (the caches at T, from `caches_at(T, {name: M or None}, judge)`),
    and the oracle's exact values describe π_ref at T; the objective's target applies at `train_temperature` only.
    `columns` go on every sample row (the run's seed, the objective); the rows of all temperatures go to
    samples.parquet."""
    frames = []
    for temperature in temperatures:
        meter = StageMeter("eval_cache")  # the reference caches at T (reused when a sweep has built them)
        at_t = policy.at_temperature(temperature)
        caches = caches_at(temperature, {"test": None, **at_t.eval_caches(settings)}, None)
        scored = {name: (judge, caches_at(temperature, {"test": None}, judge)["test"])
                  for name, judge in judges.items()}
        cache_timing = meter.stop()
        task_t = task.at_temperature(temperature)
        with_target = temperature == train_temperature
        if run_dir is not None and task_t.oracle is not None:  # the exact curves the analysis draws
            write_exact_frontier(run_dir, temperature, task_t.oracle.frontier_curves(),
                                 {**(exact_spec or {}), "temperature": float(temperature)})
        ctx = EvalContext(task=task_t, caches=caches, settings=settings, seed=seed, eval_temperature=temperature,
                          judges=scored, with_target=with_target,
                          target_log_probs=target.log_probs if with_target else None)
        meter = StageMeter("eval")
        points = at_t.evaluate(ctx)
        timings = meter.stop()
        ref_reward = float(caches["test"].mean_reward().mean())  # π_ref's point (KL 0) at T, from the test cache
        for point in points:
            metrics = {"eval_temperature": temperature, "ref_reward": ref_reward, **point.metrics}
            target_n = metrics.pop("target_n", target.bon_n)
            if with_target:
                metrics.update(bon_target_distance(target_n, metrics))
            metrics.update(frontier_regret(task_t, metrics), **timings, **cache_timing)
            if point.samples is not None:
                frames.append(point.samples.assign(eval_temperature=temperature, **(columns or {})))
            yield metrics
    if run_dir is not None:
        write_samples(run_dir, frames, tracker)


def measure(policy: EvaluatedPolicy, task, caches: dict, *, seed: int = 0, target_log_probs=None,
            judges: dict | None = None, with_target: bool = True, **settings) -> list[dict]:
    """The metrics of `policy` on `task`'s test prompts, one dict per point: the evaluation a run does at one
    temperature (the task's), for notebooks and tests. `caches`: name -> reference cache of the test prompts ("test",
    and the policy's eval_caches); `settings`: EvalConfig keys (samples_per_prompt, bootstrap, ...); `judges`: name
    -> (reward, its scored test cache); `target_log_probs`: oracle -> the exact target's log-probs."""
    config = EvalConfig(**settings)
    temperature = task.oracle.temperature if task.oracle is not None else float("nan")
    ctx = EvalContext(task=task, caches=caches, settings=config, seed=seed, eval_temperature=temperature,
                      judges=judges or {}, with_target=with_target, target_log_probs=target_log_probs)
    return [point.metrics for point in policy.evaluate(ctx)]


def frontier_regret(task, metrics: dict) -> dict:
    """On a task with an oracle: how far below the exact reward–KL and win-rate–KL frontiers the point's exact
    values are (`exact_regret`, `exact_win_rate_regret`; vbon_exp.tasks.synthetic_oracle.SyntheticOracle.frontier_at_kl)."""
    return task.oracle.frontier_regret(metrics) if task.oracle is not None and "exact_kl" in metrics else {}


def bon_target_distance(n: float | None, metrics: dict) -> dict:
    """Where an objective aims at π_BoN(N) (vBoN, BoN-SFT, BoNBoN, BOND; BoN itself): π_BoN's KL upper bound
    log N − (N − 1)/N and its win rate N/(N + 1) against one reference sample (continuous rewards), and this point's
    distance to them, on any task."""
    if n is None or n < 1:
        return {}
    bound, win = bon.kl_bon_analytic(n), n / (n + 1.0)
    return {"target_n": n, "target_kl_bound": bound, "target_win_rate": win,
            "kl_minus_target_bound": metrics["kl"] - bound, "win_rate_minus_target": metrics["win_rate"] - win}
