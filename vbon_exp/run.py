"""One run, in data-flow order: task → reference caches → objective (trainer) → evaluator → results."""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vbon_exp import bon
from vbon_exp.config import check_memory, validate
from vbon_exp.errors import ConfigError, SamplerBackendError
from vbon_exp.evaluate import evaluate, evaluate_bon_pool
from vbon_exp.meters import GENERATION, SCORING
from vbon_exp.modeling import resolve_device
from vbon_exp.objectives import OBJECTIVES, RunContext, build_objective
from vbon_exp.policies import PooledBoN
from vbon_exp.reference import BON_POOL, build_reference_cache
from vbon_exp.rewards import build_reward
from vbon_exp.sampling import SamplingConfig, check_backend
from vbon_exp.tasks import build_task
from vbon_exp.tasks.lm import require_artifact
from vbon_exp.threads import apply_threads, launcher_jobs
from vbon_exp.tracking import ID_COLUMNS, Tracker

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def hydra_run_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def parallel_jobs() -> int:
    """Processes of this machine working at once: the sweep members the Hydra launcher runs together (joblib's
    `n_jobs`; 1 outside a sweep) times the processes of one run here (`accelerate launch`: LOCAL_WORLD_SIZE)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    members = 1
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        members = launcher_jobs(OmegaConf.to_container(HydraConfig.get().launcher, resolve=True))
    return members * max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def reference_caches(cfg: DictConfig, nodes, task, sampling: SamplingConfig, splits, reward=None) -> dict:
    """The reference cache of each split, scored by the task's reward, or by `reward` (an evaluation judge)."""
    caches = {}
    for name in splits:
        # the BoN pool is a second cache of the test prompts, of its own size; `purpose` in its key keeps it apart
        split, m, purpose = ("test", nodes.eval.bon_pool_m, {"purpose": BON_POOL}) if name == BON_POOL else (
            name, nodes.reference.m_for(name), {})
        caches[name] = build_reference_cache(
            reference=task.reference, reward=reward or task.reward, tokenizer=task.tokenizer,
            prompts=task.prompts(split), m=m, sampling=sampling, seed=cfg.seed, cache_dir=cfg.reference.cache_dir,
            # the split is part of the key: train and test caches never share samples (even on the synthetic task,
            # whose train and test prompts are the same); each chunk's seed hashes the key, so distinct keys draw
            # from distinct seeds
            key_parts={"reference": task.fingerprint["reference"],
                       "reward": task.fingerprint["reward"] if reward is None else reward.fingerprint,
                       "prompts": task.fingerprint[f"{split}_prompts"], "split": split, **purpose},
            eos_id=task.eos_id, pad_id=task.pad_id, chunk_prompts=cfg.reference.chunk_prompts,
            keep_texts=cfg.reference.keep_texts, score_batch_size=cfg.eval.score_batch_size,
            desc=f"reference cache ({name}{'' if reward is None else ', judge ' + reward.name})",
        )
    return caches


def sampling_config(nodes) -> SamplingConfig:
    """The validated `sampling:` node (the `sampler` group sets its backend). A backend that cannot run here (vLLM
    not installed) stops the run now, before anything is built or sampled."""
    try:
        check_backend(nodes.sampling.backend)
    except SamplerBackendError as err:
        raise ConfigError(str(err)) from err
    return nodes.sampling


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


class _TrainLogMeans:
    """The mean of the RL trainers' per-update `train/update_tok_s` logs (training tokens per second of
    optimisation), read off tracker.log, for the results line (`train_update_tok_s`)."""

    KEYS = ("update_tok_s",)

    def __init__(self, tracker: Tracker):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        log_fn = tracker.log

        def recording_log(metrics: dict, step: int | None = None) -> None:
            for key in self.KEYS:
                value = metrics.get(f"train/{key}")
                if isinstance(value, (int, float)):
                    self.sums[key] = self.sums.get(key, 0.0) + float(value)
                    self.counts[key] = self.counts.get(key, 0) + 1
            log_fn(metrics, step=step)

        tracker.log = recording_log

    def means(self) -> dict:
        return {f"train_{key}": self.sums[key] / self.counts[key] for key in self.sums}


def base_point(cfg: DictConfig) -> dict:
    """The identifying columns of a results line (vbon_exp.tracking.ID_COLUMNS), plus the objective's legend label.
    `algo` is None for objectives that do not train with conf/algo."""
    point = {column: OmegaConf.select(cfg, key) for column, key in ID_COLUMNS.items()}
    objective = OBJECTIVES.get(point["objective"])
    if objective is None or objective.trains_with != "algo":
        point["algo"] = None
    if objective is not None:
        point["objective_label"] = objective.label
    return point


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Run one experiment and return its reward-vs-KL point (also written to results.jsonl and wandb)."""
    t_start = time.perf_counter()
    nodes = validate(cfg)  # every node as its dataclass; nothing is built before this passes
    threads = apply_threads(nodes.run.threads, parallel_jobs())  # before any tensor work
    sampling = sampling_config(nodes)
    from accelerate import Accelerator

    # one process unless started with `accelerate launch`; then every process runs this function
    accelerator = Accelerator(cpu=resolve_device(cfg.device).type == "cpu")
    main = accelerator.is_main_process
    device = accelerator.device
    run_dir = Path(run_dir or hydra_run_dir() or cfg.paths.output_root)
    if accelerator.num_processes > 1:
        # Hydra names the run dir from the clock in each process; all must use the main process's (checkpoints)
        from accelerate.utils import broadcast_object_list

        run_dir = Path(broadcast_object_list([str(run_dir)])[0])
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    objective = build_objective(nodes.objective)
    ids = base_point(cfg)
    tracker = Tracker(
        run_dir, OmegaConf.to_container(cfg, resolve=True), mode=cfg.wandb.mode if main else "disabled",
        project=cfg.wandb.project, write_results=main, results_id=ids,
        entity=cfg.wandb.entity, group=cfg.wandb.group, tags=cfg.wandb.tags,
        name=f"{cfg.task.name}-{cfg.objective.name}-b{cfg.objective.beta}-n{cfg.objective.n}-s{cfg.seed}",
    )
    train_logs = _TrainLogMeans(tracker)
    ok = False
    try:
        stage = time.perf_counter()
        with accelerator.main_process_first():  # the main process builds artifacts and caches; others then load
            task = build_task(nodes.task, device=device, cache_dir=nodes.paths.cache_dir, sampling=sampling,
                              model=nodes.model, reward=nodes.reward)
            # the models' vocabulary is known now: the memory pre-flight again, with its logits, before any sampling
            check_memory(nodes, vocab_size=getattr(task.reference.config, "vocab_size", None))
            cache_meter = StageMeter("cache_build")
            # the evaluator's test cache at the sampling temperature, unless no evaluation happens there
            test = ("test",) if sampling.temperature in evaluation_temperatures(nodes) else ()
            splits = [s for s in objective.cache_splits if test or s != BON_POOL]  # the pool: an evaluation cache
            caches = reference_caches(cfg, nodes, task, sampling, dict.fromkeys((*test, *splits)))
            timings = cache_meter.stop()
        timings["setup_s"] = time.perf_counter() - stage

        ctx = RunContext(cfg=cfg, task=task, device=device, run_dir=run_dir, sampling=sampling, tracker=tracker,
                         caches=caches, accelerator=accelerator)
        train_meter = StageMeter("train")
        policy = objective.fit(ctx)
        timings.update(train_meter.stop(), **train_logs.means())

        point = {**ids, "status": "ok", "num_processes": accelerator.num_processes, "threads": threads, **ctx.extras}
        if main:  # one results line per evaluation temperature (and per N for BoN from the pool); returns the first
            lines = []
            for metrics in evaluate_points(cfg, nodes, objective, policy, task, caches, sampling):
                line = {**point, **metrics, **timings, "wall_s": time.perf_counter() - t_start,
                        "run_dir": str(run_dir)}
                tracker.write_point(line)
                print(summary_line(line, tracker))
                lines.append(line)
            point = lines[0]
        accelerator.wait_for_everyone()
        ok = True
    finally:
        tracker.finish(exit_code=0 if ok else 1)
    return point


def evaluation_temperatures(nodes) -> list[float]:
    """`eval.temperatures`, or the sampling temperature alone (null)."""
    return list(nodes.eval.temperatures or [nodes.sampling.temperature])


def build_judges(nodes, task) -> dict:
    """The `eval.judges` reward models by name (vbon_exp.rewards.REWARDS), reading the policy tokenizer's text."""
    device = next(task.reference.parameters()).device
    judges = {}
    for name, judge in nodes.judges.items():
        if getattr(judge, "name_or_path", None):
            require_artifact(judge.name_or_path, judge.made_by, f"eval.judges: {name}.name_or_path")
        judges[name] = build_reward(judge, device=device, policy_tokenizer=task.tokenizer, eos_id=task.eos_id)
    return judges


def evaluate_points(cfg: DictConfig, nodes, objective, policy, task, caches: dict, sampling: SamplingConfig):
    """The metrics of `policy` at each evaluation temperature T, one after another, each with `eval_temperature`:
    the policy samples at T, its KL is to π_ref at T (both models' token distributions at T), its win rates are
    against π_ref samples at T (the test cache at T: the cache key holds the temperature), BoN draws its N
    candidates from π_ref at T (BoN from the pool reads the pool drawn at T, one dict per N), and the synthetic
    oracle's exact values describe π_ref at T."""
    judges = build_judges(nodes, task)
    for temperature in evaluation_temperatures(nodes):
        at_t = replace(sampling, temperature=temperature)
        meter = StageMeter("eval_cache")  # the reference caches at T (reused when a sweep has built them)
        needed = ["test", *([BON_POOL] if isinstance(policy, PooledBoN) else [])]
        at_caches = caches if temperature == sampling.temperature else reference_caches(
            cfg, nodes, task, at_t, needed)
        scored = {name: (judge, reference_caches(cfg, nodes, task, at_t, ["test"], reward=judge)["test"])
                  for name, judge in judges.items()}
        cache_timing = meter.stop()
        with_target = temperature == sampling.temperature
        if isinstance(policy, PooledBoN):  # BoN from the pool at T: every N, no sampling (no judges: check_run)
            for metrics in evaluate_pool_points(cfg, nodes, PooledBoN(at_caches[BON_POOL], policy.ns),
                                                task.at_temperature(temperature), at_caches["test"], with_target):
                yield {"eval_temperature": temperature, **metrics, **cache_timing}
            continue
        metrics = evaluate_point(cfg, nodes, objective, policy.at_temperature(temperature),
                                 task.at_temperature(temperature), at_caches["test"], judges=scored,
                                 with_target=with_target)
        yield {"eval_temperature": temperature, **metrics, **cache_timing}


def evaluate_pool_points(cfg: DictConfig, nodes, policy: PooledBoN, task, test_cache, with_target: bool) -> list:
    """BoN from the pool: one metrics dict per N (vbon_exp.evaluate.evaluate_bon_pool), each with its distance to
    π_BoN at its own N where the target is defined."""
    meter = StageMeter("eval")
    points = evaluate_bon_pool(policy, task, test_cache, seed=cfg.seed + 1, bootstrap=nodes.eval.bootstrap,
                               kl_estimator=nodes.eval.kl_estimator, with_target=with_target)
    timings = meter.stop()  # eval_s (no sampling: no rates)
    return [{**p, **(bon_target_distance(p["n"], p) if with_target else {}), **frontier_regret(task, p), **timings}
            for p in points]


def evaluate_point(cfg: DictConfig, nodes, objective, policy, task, test_cache, judges=None,
                   with_target: bool = True) -> dict:
    """The evaluator's metrics; on a task with an oracle also KL(π_ref ‖ target), so convergence reads off one line.
    `with_target` false (an evaluation temperature other than the one trained at): no target metrics, since the
    objective's target is defined by π_ref at the temperature it trained at."""
    meter = StageMeter("eval")
    target = objective.target_log_probs(task.oracle) if task.oracle is not None and with_target else None
    metrics = evaluate(
        policy, task, test_cache, samples_per_prompt=nodes.eval.samples_per_prompt, seed=cfg.seed + 1,
        batch_size=nodes.eval.batch_size, target_log_probs=target, kl_estimator=nodes.eval.kl_estimator,
        judges=judges, score_batch_size=nodes.eval.score_batch_size, bootstrap=nodes.eval.bootstrap,
    )
    if target is not None:
        metrics["exact_kl_to_target_init"] = task.oracle.metrics(task.oracle.ref_log_probs, target)[
            "exact_kl_to_target"]
    if with_target:
        metrics.update(bon_target_distance(objective.bon_target_n(), metrics))
    metrics.update(frontier_regret(task, metrics))
    metrics.update(meter.stop())  # eval_s, eval_gen_tok_s, eval_score_samples_s
    return metrics


def frontier_regret(task, metrics: dict) -> dict:
    """On a task with an oracle: how far below the exact reward–KL and win-rate–KL frontiers the point's exact
    values are (`exact_regret`, `exact_win_rate_regret`; vbon_exp.tasks.synthetic.SyntheticOracle.frontier_at_kl)."""
    return task.oracle.frontier_regret(metrics) if task.oracle is not None else {}


def bon_target_distance(n: float | None, metrics: dict) -> dict:
    """Where an objective aims at π_BoN(N) (vBoN, BoN-SFT, BoNBoN, BOND; BoN itself): π_BoN's KL upper bound
    log N − (N − 1)/N and its win rate N/(N + 1) against one reference sample (continuous rewards), and this point's
    distance to them, on any task."""
    if n is None or n < 1:
        return {}
    bound, win = bon.kl_bon_analytic(n), n / (n + 1.0)
    return {"target_n": n, "target_kl_bound": bound, "target_win_rate": win,
            "kl_minus_target_bound": metrics["kl"] - bound, "win_rate_minus_target": metrics["win_rate"] - win}


def _throughput_line(p: dict) -> str:
    """Seconds per stage and the sampling / scoring / update throughput of each, where there was any."""
    parts = []
    for stage, label in (("cache_build", "cache"), ("train", "train"), ("eval_cache", "eval cache"), ("eval", "eval")):
        if f"{stage}_s" not in p:
            continue
        rates = [f"{p[key]:,.0f} {unit}" for key, unit in (
            (f"{stage}_gen_tok_s", "gen tok/s"), (f"{stage}_score_samples_s", "scored/s"),
            (f"{stage}_update_tok_s", "update tok/s")) if p.get(key) is not None]
        parts.append(f"{label} {p[f'{stage}_s']:.1f} s" + (f" ({', '.join(rates)})" if rates else ""))
    return "  stages: " + "   ".join(parts)


def summary_line(p: dict, tracker: Tracker) -> str:
    lines = [
        f"vbon_exp: task={p['task']} objective={p['objective']} N={p['n']} beta={p['beta']} seed={p['seed']} "
        + f"eval temperature={p['eval_temperature']}" + (f" estimate={p['estimate']}" if "estimate" in p else ""),
        f"  reward {p['reward']:.4f} ± {p['reward_se']:.4f}   KL[{p['kl_estimator']}] {p['kl']:.4f} ± {p['kl_se']:.4f}"
        + (f" (analytic {p['kl_analytic']:.4f})" if "kl_analytic" in p else "")
        + f"   win rate {p['win_rate']:.4f} ± {p['win_rate_se']:.4f}   ({p['wall_s']:.1f} s)",
    ]
    if "exact_reward" in p:
        lines.append(
            f"  exact: reward {p['exact_reward']:.4f}   KL {p['exact_kl']:.4f}   win rate {p['exact_win_rate']:.4f}"
            + (f"   KL to target {p['exact_kl_to_target']:.4g}" if "exact_kl_to_target" in p else "")
            + (f" (π_ref: {p['exact_kl_to_target_init']:.4g})" if "exact_kl_to_target_init" in p else "")
        )
    judges = sorted({key.split("/")[1] for key in p if key.startswith("judge/")})
    if judges:
        lines.append("  judges: " + "   ".join(
            f"{name}: reward {p[f'judge/{name}/reward']:.4f} ± {p[f'judge/{name}/reward_se']:.4f}, win rate "
            f"{p[f'judge/{name}/win_rate']:.4f} ± {p[f'judge/{name}/win_rate_se']:.4f}" for name in judges))
    lines.append(_throughput_line(p))
    lines.append(f"  results: {tracker.results_path}")
    if tracker.wandb_dir:
        lines.append(f"  wandb ({tracker.mode}): {tracker.wandb_dir}")
    return "\n".join(lines)
