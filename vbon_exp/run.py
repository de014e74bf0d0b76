"""One run, in data-flow order: task → reference caches → objective (trainer) → evaluator → results."""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vbon_exp.config import check_memory, validate
from vbon_exp.errors import ConfigError, SamplerBackendError
from vbon_exp.evaluation import StageMeter, Target, build_judges, evaluate_policy
from vbon_exp.modeling import resolve_device
from vbon_exp.objectives import RunContext, build_objective
from vbon_exp.reference import task_caches
from vbon_exp.results import (
    ALGO_COLUMNS, ID_COLUMNS, RESULTS_FILE, TASK_VARIANT, finished_lines, inference_column, parse_inference_column,
)
from vbon_exp.sampling import SamplingConfig, check_backend
from vbon_exp.settings.run import RunSettings
from vbon_exp.tasks import build_task
from vbon_exp.threads import apply_threads, launcher_jobs
from vbon_exp.tracking import Tracker
from vbon_exp.trainers.trainable import apply_tf32

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


def sampling_config(nodes) -> SamplingConfig:
    """The validated `sampling:` node (the `sampler` group sets its backend). A backend that cannot run here (vLLM
    not installed) stops the run now, before anything is built or sampled."""
    try:
        check_backend(nodes.sampling.backend)
    except SamplerBackendError as err:
        raise ConfigError(str(err)) from err
    return nodes.sampling


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


def base_point(settings: RunSettings) -> dict:
    """The identifying columns of a results line (vbon_exp.results.ID_COLUMNS) read off the validated settings, plus
    the objective's legend label. `algo` is None for objectives that do not train with conf/algo."""
    point = {column: settings.select(key) for column, key in ID_COLUMNS.items()}
    if settings.objective.trains_with != "algo":
        point.update(dict.fromkeys(ALGO_COLUMNS))
    point["objective_label"] = settings.objective.legend()
    point[TASK_VARIANT] = task_variant(settings.task, settings.model, settings.reward)
    if settings.objective.variant() is not None:  # a method of its own beyond name, β, N (declared by the settings)
        point["variant"] = settings.objective.variant()
    return point


# task keys that leave a point comparable: π_ref's sampling defaults (the sampling columns say what it used), where
# the data come from, and what only training reads
NOT_TASK_VARIANT = ("name", "temperature", "top_k", "top_p", "max_new_tokens", "dataset", "data_dir",
                    "num_train_prompts", "train_split")


def task_variant(task, model=None, reward=None) -> str | None:
    """Which variant of its task the run runs (results column `task_variant`: the analysis never puts two variants
    on one frontier), from the settings' task, model and reward nodes: the task keys off their defaults (e.g.
    `reward_levels=5`: the synthetic task's reference and reward are task keys), and on a language-model task its
    reference and reward models (the last part of their names). None for the task's defaults."""
    parts = [f"{f.name}={getattr(task, f.name)}" for f in fields(task)
             if f.name not in NOT_TASK_VARIANT and (f.default is MISSING or getattr(task, f.name) != f.default)]
    if task.uses_model_groups:
        reward_name = getattr(reward, "name_or_path", None) or reward.type
        parts += [f"reference={_last_part(model.name_or_path)}", f"reward_model={_last_part(reward_name)}"]
    return " · ".join(parts) or None


def _last_part(name_or_path: str) -> str:
    return str(name_or_path).rstrip("/").rsplit("/", 1)[-1]


def make_accelerator(device: torch.device, mixed_precision: str):
    """One process unless started with `accelerate launch` (then every process runs `run`), with the run's autocast
    precision. accelerate keeps one process-wide state that refuses a second precision; runs in one process (the
    Python API, tests) may each ask their own, so a single-process state is reset first."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision and state.get("num_processes") == 1:
        AcceleratorState._reset_state()
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision)


def run(cfg: DictConfig | RunSettings, run_dir: Path | None = None, skip_finished: bool = False) -> dict:
    """Run one experiment and return its reward-vs-KL point (also written to results.jsonl and wandb). With
    `skip_finished` (a sweep member: `python -m vbon_exp -m`), a run dir that already holds this run's results line
    from a complete training (no train.max_updates) returns that line instead (train.resume=false runs it again)."""
    t_start = time.perf_counter()
    # every node as its dataclass (validated here unless the caller did); nothing is built before this passes
    nodes = cfg if isinstance(cfg, RunSettings) else validate(cfg)
    del cfg  # nothing reads the composed config after validation
    threads = apply_threads(nodes.run.threads, parallel_jobs())  # before any tensor work
    sampling = sampling_config(nodes)
    device = resolve_device(nodes.run.device)
    nodes.train.check_device(device, frozen_dtypes={"model.dtype": getattr(nodes.model, "dtype", None),
                                                     "reward.dtype": getattr(nodes.reward, "dtype", None)})
    apply_tf32(nodes.train.tf32, device)
    accelerator = make_accelerator(device, nodes.train.mixed_precision)
    main = accelerator.is_main_process
    device = accelerator.device
    run_dir = Path(run_dir or hydra_run_dir() or nodes.paths.output_root)
    if accelerator.num_processes > 1:
        # Hydra names the run dir from the clock in each process; all must use the main process's (checkpoints)
        from accelerate.utils import broadcast_object_list

        run_dir = Path(broadcast_object_list([str(run_dir)])[0])
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(nodes.seed)
    objective = build_objective(nodes.objective)  # the run's one instance of it
    ids = base_point(nodes)
    complete = skip_finished and nodes.train.resume == "auto" and nodes.train.max_updates is None
    done = finished_lines(run_dir, ids) if complete else []
    if done:  # a sweep re-run into its own directory: this member finished before (train.resume=false redoes it)
        log.info("finished already: %s has its results line; skipped (train.resume=false runs it again)",
                 run_dir / RESULTS_FILE)
        return done[0]
    wandb = nodes.wandb
    tracker = Tracker(
        run_dir, nodes.as_dict(), mode=wandb.mode if main else "disabled", project=wandb.project, write_results=main,
        results_id=ids, entity=wandb.entity, group=wandb.group, tags=wandb.tags,
        name=f"{ids['task']}-{ids['objective']}-b{ids['beta']}-n{ids['n']}-s{ids['seed']}",
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
            objective.check_task(task)
            if task.oracle is not None:  # the synthetic task: its exact gold curves of this run's method too
                task.oracle.method = nodes.objective.name
            cache_meter = StageMeter("cache_build")
            # the training caches, and the evaluation's at the sampling temperature unless no evaluation happens there
            requests = dict.fromkeys(objective.cache_splits)
            if sampling.temperature in evaluation_temperatures(nodes):
                requests.update({"test": None, **objective.evaluation_caches(nodes.eval)})
            caches = task_caches(task, requests, sampling=sampling, seed=nodes.seed, settings=nodes.reference,
                                 score_batch_size=nodes.eval.score_batch_size)
            timings = cache_meter.stop()
        timings["setup_s"] = time.perf_counter() - stage

        ctx = RunContext(settings=nodes, task=task, device=device, run_dir=run_dir, sampling=sampling, tracker=tracker,
                         caches=caches, accelerator=accelerator)
        train_meter = StageMeter("train")
        policy = objective.fit(ctx)
        timings.update(train_meter.stop(), **train_logs.means())

        point = {**ids, "status": "ok", "num_processes": accelerator.num_processes, "threads": threads, **ctx.extras}
        if main:  # one results line per evaluation temperature (and per N for BoN from the pool); returns the first
            lines = []
            for metrics in evaluate_run(nodes, objective, policy, task, caches, sampling, run_dir, tracker):
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
    """`eval.temperatures`, or the sampling temperature alone (null): vbon_exp.settings.eval's one rule."""
    return nodes.eval.temperatures_at(nodes.sampling.temperature)


def run_caches(nodes: RunSettings, task, built: dict, sampling: SamplingConfig):
    """`caches_at(T, {name: M or None}, judge)`: the reference caches of a run at an evaluation temperature T,
    those built at set-up reused (vbon_exp.reference.task_caches)."""

    def caches_at(temperature: float, requests: dict, judge=None) -> dict:
        if judge is None and temperature == sampling.temperature and set(requests) <= set(built):
            return {name: built[name] for name in requests}
        return task_caches(task, requests, sampling=replace(sampling, temperature=temperature), seed=nodes.seed,
                           settings=nodes.reference, score_batch_size=nodes.eval.score_batch_size, reward=judge)

    return caches_at


def evaluate_run(nodes: RunSettings, objective, policy, task, caches: dict, sampling: SamplingConfig, run_dir,
                 tracker=None):
    """The results lines of the run's policy at each evaluation temperature (vbon_exp/evaluation/runner.py)."""
    target = Target(log_probs=objective.target_log_probs if task.oracle is not None else None,
                    bon_n=objective.bon_target_n())
    spec = {"task": asdict(nodes.task), "max_new_tokens": sampling.max_new_tokens}
    judged = nodes.judges if getattr(policy, "samples", True) else {}
    if nodes.judges and not judged:
        log.info("eval.judges %s: objective=%s is estimated from the BoN pool, which holds rewards, not samples: no "
                 "judge columns (objective.estimate=sample gives them)", sorted(nodes.judges), nodes.objective.name)
    return evaluate_policy(
        policy, task=task, settings=nodes.eval, seed=nodes.seed + 1, temperatures=evaluation_temperatures(nodes),
        train_temperature=sampling.temperature, caches_at=run_caches(nodes, task, caches, sampling),
        judges=build_judges(judged, task), target=target, run_dir=run_dir, exact_spec=spec,
        tracker=tracker, columns={"seed": nodes.seed, "objective": nodes.objective.name})


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


def _inference_lines(p: dict) -> list[str]:
    """With eval.inference_n: per N′ the reward of best-of-N′ of the policy and its win rate against best-of-N′ of
    π_ref (ties ½), each with its SE and, on the synthetic task, its exact value."""
    ns = sorted({parsed[1] for parsed in map(parse_inference_column, p) if parsed is not None})

    def value(metric: str, n: int) -> str:
        column = inference_column(metric, n)
        exact = p.get(f"exact_{column}")
        return f"{p[column]:.4f} ± {p[f'{column}_se']:.4f}" + (f" (exact {exact:.4f})" if exact is not None else "")

    return [f"  best-of-{n} at inference: reward {value('reward', n)}   win rate vs best-of-{n} of π_ref "
            f"{value('win_rate', n)}" for n in ns]


def summary_line(p: dict, tracker: Tracker) -> str:
    lines = [
        f"vbon_exp: task={p['task']} objective={p['objective']} N={p['n']} beta={p['beta']} seed={p['seed']} "
        + f"eval temperature={p['eval_temperature']}" + (f" estimate={p['estimate']}" if "estimate" in p else "")
        + (f" mu={p['mu']:g} (N = 1 + Poisson(mu))" if "mu" in p else ""),
        f"  reward {p['reward']:.4f} ± {p['reward_se']:.4f}   KL[{p['kl_estimator']}] {p['kl']:.4f} ± {p['kl_se']:.4f}"
        + (f" (analytic {p['kl_analytic']:.4f})" if "kl_analytic" in p else "")
        + f"   win rate {p['win_rate']:.4f} ± {p['win_rate_se']:.4f}   ({p['wall_s']:.1f} s)",
    ]
    if "exact_reward" in p:
        lines.append(
            f"  exact: reward {p['exact_reward']:.4f}   KL {p['exact_kl']:.4f}   win rate {p['exact_win_rate']:.4f}"
            + (f"   gold reward {p['exact_gold_reward']:.4f} (win rate {p['exact_gold_win_rate']:.4f})"
               if "exact_gold_reward" in p else "")
            + (f"   KL to target {p['exact_kl_to_target']:.4g}" if "exact_kl_to_target" in p else "")
            + (f" (π_ref: {p['exact_kl_to_target_init']:.4g})" if "exact_kl_to_target_init" in p else "")
            + (f"   KL to optimum π* {p['exact_kl_to_optimum']:.4g}" if "exact_kl_to_optimum" in p else "")
            + (f" (final β {p['final_kl_coef']:.4g})" if "final_kl_coef" in p else "")
        )
    judges = sorted({key.split("/")[1] for key in p if key.startswith("judge/")})
    if judges:
        lines.append("  judges: " + "   ".join(
            f"{name}: reward {p[f'judge/{name}/reward']:.4f} ± {p[f'judge/{name}/reward_se']:.4f}, win rate "
            f"{p[f'judge/{name}/win_rate']:.4f} ± {p[f'judge/{name}/win_rate_se']:.4f}" for name in judges))
    lines.extend(_inference_lines(p))
    lines.append(_throughput_line(p))
    lines.append(f"  results: {tracker.results_path}")
    if tracker.wandb_dir:
        lines.append(f"  wandb ({tracker.mode}): {tracker.wandb_dir}")
    return "\n".join(lines)
