"""`python -m vbon_exp [+experiment=<preset>] plan=true`: the plan of a run and of every objective its preset sweeps
over, from the composed config (vbon_exp/plan/estimate.py has the estimates and their assumptions)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from vbon_exp.plan.estimate import (
    GB,
    Shape,
    Step,
    bench_rates,
    hours,
    memory,
    read_config,
    shape_of,
    update_work_ratio,
)


def member_step(nodes) -> Step:
    """The training step of the run's objective, per process (`WORLD_SIZE` processes share the RL batch)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    sizes = nodes.task.sizes()
    prompt, new = int(sizes["prompt_tokens"]), int(nodes.sampling.max_new_tokens)
    kind = nodes.objective.trains_with
    if kind == "algo":
        algo = nodes.algo
        local = algo.batch_size // world
        micro = min(algo.micro_batch_size or local // algo.num_minibatches, local // algo.num_minibatches)
        return Step("rl", local, micro, prompt, new, algo.trainable_layers, value_head=algo.name == "ppo",
                    anchor=nodes.objective.policy_copies > 0)
    if kind in ("sft", "preference"):
        loop = getattr(nodes, kind)
        return Step(kind, nodes.eval.batch_size, loop.batch_size, prompt, new, loop.trainable_layers)
    return Step("inference", nodes.eval.batch_size, nodes.eval.batch_size, prompt, new)


def run_shapes(nodes) -> tuple[Shape, Optional[Shape]]:
    """(policy/reference shape, reward model shape or None) of the run's task, from config files only."""
    if nodes.model is None:  # the synthetic task: its model is defined by the task's own keys
        from vbon_exp.settings.task import synthetic_architecture

        return shape_of(synthetic_architecture(nodes.task), "synthetic GPT-2"), None
    model = nodes.model
    policy = cached_shape(model.name_or_path, "model.name_or_path", model.trust_remote_code, model.made_by)
    reward = None
    if getattr(nodes.reward, "name_or_path", None):
        r = nodes.reward
        reward = cached_shape(r.name_or_path, "reward.name_or_path", r.trust_remote_code, r.made_by, classifier=True)
    return policy, reward


_SHAPES: dict[tuple, Shape] = {}


def cached_shape(name_or_path: str, key: str, trust_remote_code: bool, made_by: Optional[str],
                 classifier: bool = False) -> Shape:
    """shape_of(read_config(...)), once per model and process (a preset's members share their models)."""
    ident = (name_or_path, classifier, Path(str(name_or_path)).expanduser().exists())
    if ident not in _SHAPES:
        config = read_config(name_or_path, key, trust_remote_code, made_by)
        source = name_or_path if ident[2] or not made_by else f"{name_or_path} (not built yet: as `{made_by}` makes it)"
        _SHAPES[ident] = shape_of(config, source, classifier)
    return _SHAPES[ident]


def reference_caches(nodes) -> dict[str, float]:
    """The reference caches one run samples, name -> responses: the test cache (per evaluation temperature), one
    per evaluation judge (a sampled policy's only), the train cache and the BoN pool where the objective reads them.
    Members of a sweep with one seed share them (their keys hold no β, no objective)."""
    sizes = nodes.task.sizes()
    train_p, test_p = sizes["num_train_prompts"] or 0, sizes["num_test_prompts"] or 0
    ref, ev = nodes.reference, nodes.eval
    temps = len(ev.temperatures_at(nodes.sampling.temperature))
    objective = nodes.objective
    test = test_p * ref.m_for("test") * temps
    pool = objective.evaluation_caches(ev)
    caches = {"test": float(test)}
    if not pool:  # a sampled policy: each judge scores its own π_ref samples
        caches.update({f"judge {name}": float(test) for name in ev.judges})
    if "train" in objective.cache_splits():
        caches["train"] = float(train_p * ref.m_for("train"))
    caches.update({name: float(test_p * m * temps) for name, m in pool.items()})
    return caches


def work(nodes, step: Step) -> tuple[float, float]:
    """(training episodes or examples, sampled responses but the reference caches') of one run: training length,
    evaluation samples (per evaluation temperature), BoN-SFT's and the pairs' samples."""
    sizes = nodes.task.sizes()
    train_p, test_p = sizes["num_train_prompts"] or 0, sizes["num_test_prompts"] or 0
    temps = len(nodes.eval.temperatures_at(nodes.sampling.temperature))
    samples = test_p * nodes.eval.samples_per_prompt * temps
    n = float(nodes.objective.n or 1)
    if step.kind == "rl":
        return float(nodes.algo.total_episodes), samples
    if step.kind == "sft":
        return float(train_p * nodes.sft.samples_per_prompt * nodes.sft.epochs), \
            samples + train_p * nodes.sft.samples_per_prompt * n
    if step.kind == "preference":
        pairs = getattr(nodes.preference, "pairs_per_prompt", 1) * train_p
        return float(pairs * nodes.preference.epochs), samples + pairs * n
    return 0.0, samples


def plan_member(nodes, rates, device: str, label: Optional[str] = None) -> dict:
    policy, reward = run_shapes(nodes)
    step = member_step(nodes)
    model_dtype = getattr(nodes.model, "dtype", None) if nodes.model is not None else None
    reward_dtype = getattr(nodes.reward, "dtype", None) if nodes.reward is not None else None
    parts = memory(policy, reward, step, nodes.train, model_dtype, reward_dtype, device)
    plain = parts
    if step.kind != "inference" and not nodes.train.gradient_checkpointing:
        from dataclasses import replace

        ckpt = replace(nodes.train, gradient_checkpointing=True)
        plain = memory(policy, reward, step, ckpt, model_dtype, reward_dtype, device)
    from vbon_exp.settings.reference import cache_memory_bytes

    sizes = nodes.task.sizes()
    host = cache_memory_bytes(sizes["num_test_prompts"] or 0, nodes.reference.m_for("test"),
                              nodes.reference.chunk_prompts, step.prompt_tokens + step.new_tokens)
    episodes, samples = work(nodes, step)
    tokens = step.prompt_tokens + step.new_tokens
    caches = reference_caches(nodes)
    own_hours = hours(rates, policy, episodes, samples, tokens, work_ratio(rates, nodes, step, policy))
    cache_hours = {name: hours(rates, policy, 0.0, count, tokens) for name, count in caches.items()}
    run_hours = None if own_hours is None else own_hours + sum(cache_hours.values())
    slowdown = emulated_bf16_slowdown(nodes, device)
    return {"objective": label or nodes.objective.name, "step": step, "policy": policy, "reward": reward, "parts": parts,
            "total": sum(parts.values()), "with_checkpointing": plain["activations"], "host": host,
            "hours": None if run_hours is None else run_hours * slowdown, "bf16_slowdown": slowdown,
            "own_hours": own_hours, "cache_hours": cache_hours,
            "episodes": episodes, "samples": samples + sum(caches.values()), "unknown_prompts": not sizes["num_train_prompts"]}


def format_member(m: dict) -> list[str]:
    p, step = m["parts"], m["step"]
    gb = lambda x: f"{x / GB:.2f} GB"  # noqa: E731
    weights = " + ".join(f"{k} {gb(p[k])}" for k in ("policy", "reference", "reward", "value_head", "anchor")
                         if p.get(k))
    lines = [f"  {m['objective']} ({step.kind}; micro-batch {step.micro} × {step.prompt_tokens}+{step.new_tokens} "
             f"tokens): ≈ {gb(m['total'])} per GPU",
             f"    weights: {weights}",
             f"    gradients + AdamW {gb(p['gradients + AdamW'])}; activations {gb(p['activations'])}"
             + (f" ({gb(m['with_checkpointing'])} with train.gradient_checkpointing=true)"
                if m["with_checkpointing"] != p["activations"] else "")
             + f"; log-prob chunks {gb(p['logits'])}; generation KV cache {gb(p['kv_cache'])}"
             + (f"; CUDA context {gb(p['overhead'])}" if p["overhead"] else ""),
             f"    host memory: reference caches ≥ {gb(m['host'])}; work: {m['episodes']:,.0f} training "
             f"episodes/examples, {m['samples']:,.0f} sampled responses"
             + (" (and more: the task's train prompts are all of its data set's, counted at run time)"
                if m["unknown_prompts"] else "")]
    return lines


def count(params: int) -> str:
    return f"{params / 1e9:.3g} B" if params >= 1e9 else f"{params / 1e6:.3g} M" if params >= 1e5 else f"{params:,}"


def work_ratio(rates, nodes, step: Step, policy: Shape) -> float:
    """The run's update work over the bench PPO step's (plan/estimate.py update_work_ratio): its epochs (RL: algo's;
    the supervised loops: one pass, no sampling) and the share of blocks that get gradients."""
    if not rates or step.kind == "inference":
        return 1.0
    share = min(1.0, (step.trainable_layers or policy.layers) / policy.layers)
    epochs = nodes.algo.ppo_epochs if step.kind == "rl" else 1
    return update_work_ratio(rates, epochs, share)


def emulated_bf16_slowdown(nodes, device: str) -> float:
    """How much slower the run's compute is than the bench's float32 rate: ~21× where it asks bf16 of a CPU without
    bf16 instructions (vbon_exp/cpu_features.py), else 1."""
    from vbon_exp.cpu_features import EMULATED_BF16_SLOWDOWN, cpu_bf16_native

    asks_bf16 = nodes.train.mixed_precision == "bf16" or "bfloat16" in (
        getattr(nodes.model, "dtype", None), getattr(nodes.reward, "dtype", None))
    on_cpu = device == "cpu" or str(nodes.run.device) == "auto" and not Path("/dev/nvidia0").exists()
    return EMULATED_BF16_SLOWDOWN if on_cpu and asks_bf16 and not cpu_bf16_native() else 1.0


def sweep_hours(members: list[dict], per_objective: int, seeds: int) -> float:
    """Every member's own work (training, evaluation samples), and each distinct reference cache once per seed:
    the members of one seed share their caches whatever their objective and β."""
    own = sum(m["own_hours"] or 0.0 for m in members) * per_objective
    caches: dict[str, float] = {}
    for m in members:
        caches.update({name: h or 0.0 for name, h in m["cache_hours"].items()})
    return own + seeds * sum(caches.values())


def plan_text(members: list[dict], rates, label: str, per_objective: int = 1, seeds: int = 1) -> str:
    policy, reward = members[0]["policy"], members[0]["reward"]
    head = [f"plan for {label} ({len(members)} objective(s) × {per_objective} member(s) each; per process = per GPU; "
            "no weights loaded)",
            f"  policy / reference: {policy.source} — {count(policy.params)} parameters, {policy.layers} "
            f"layers, hidden {policy.hidden}, vocabulary {policy.vocab:,}"
            + (f"; reward: {reward.source} — {count(reward.params)}" if reward else "")]
    for m in members:
        head += format_member(m)
    peak = max(m["total"] for m in members)
    if rates is None:
        time_line = ("  hours: rate missing (no outputs/bench/summary.json with the bench model's size: run `make "
                     "bench`, on a GPU `make bench DEVICE=cuda`)")
    else:
        total = sweep_hours(members, per_objective, seeds)
        time_line = (f"  hours (rough: parameters × tokens do not scale fixed costs): ≈ {total:.3g} h for all "
                     f"{len(members) * per_objective} member(s) on {rates['where']} "
                     f"({rates['dtype']}; bench rates scaled by parameters × tokens; each reference cache once per "
                     f"seed, {seeds} seed(s)); per member alone, its caches included: "
                     + ", ".join(f"{m['objective']} {m['hours']:.3g} h" for m in members if m["hours"] is not None))
        if any(m["bf16_slowdown"] > 1 for m in members):
            time_line += (f"\n  bf16 on this CPU, which has no bf16 instructions: hours × {members[0]['bf16_slowdown']:.0f}"
                          " (emulated bf16; float32 is the fast choice here, train.mixed_precision=no)")
    head += [f"  peak ≈ {peak / GB:.1f} GB per GPU", time_line]
    return "\n".join(head)


def sweep_values(key: str, value) -> list[str]:
    """The values a Hydra sweep of `key=value` runs, in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
    return list(parsed.sweep_string_iterator()) if parsed.is_sweep_override() else [str(value)]


def sweep_objectives(params) -> tuple[list[str], int]:
    """(the objectives a sweep over `params` (hydra.sweeper.params: a preset's members) runs, in order, [] when the
    objective is not swept; the members per objective: the product of the other axes' sizes)."""
    params = dict(params or {})
    per_objective = 1
    for key, value in params.items():
        if key != "objective":
            per_objective *= len(sweep_values(key, value))
    return (sweep_values("objective", params["objective"]) if "objective" in params else []), per_objective


def plan_for(cfg, overrides: list[str], sweep_params=None, compose=None) -> str:
    """The plan of `cfg`'s run (composed from `overrides`), and of every objective `sweep_params` sweeps over, each
    composed by `compose(overrides)` as the sweep would compose it."""
    from vbon_exp.config import validate

    overrides = [o for o in overrides if not o.startswith("plan=")]
    objectives, per_objective = sweep_objectives(sweep_params)
    seed_axis = dict(sweep_params or {}).get("seed")
    seeds = len(sweep_values("seed", seed_axis)) if seed_axis is not None else 1
    rates = bench_rates()
    configs = [(None, cfg)] if not objectives else [
        (name, compose([*overrides, f"objective={name}"])) for name in objectives]
    members = []
    for name, member in configs:
        nodes = validate(member)
        device = "cpu" if nodes.run.device == "cpu" else "cuda"
        members.append(plan_member(nodes, rates, device, name))
    return plan_text(members, rates, " ".join(overrides) or "the default run", per_objective, seeds)


def plan_from_hydra(cfg) -> str:
    """plan_for the command line Hydra composed `cfg` from (`python -m vbon_exp ... plan=true`)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return plan_for(cfg, list(hc.overrides.task), hc.sweeper.get("params"),
                    lambda overrides: compose("config", overrides=overrides))
