"""The config schema and start-up validation: bad input fails here, naming the key, before any model loads.

Every config node has one dataclass beside the component that reads it (its fields, types, defaults and a comment
per key, and a `check` for values). They are registered with Hydra's ConfigStore under `schema/...` and named in the
YAML defaults lists (`- /schema/algo@_here_`), so Hydra composes typed nodes: a typo (`algo.lrr=1`) or a wrong type
(`algo.lr=fast`) stops at composition. `validate` then merges every composed node into its schema again, which
also rejects keys added with `+` (Hydra lets `+` add keys even to typed nodes), and runs every value check, the
cross-key rules, and a pre-flight estimate of the memory the run will hold. YAML files hold no default of their
own: only the values that make an option what it is (`conf/algo/rloo.yaml`: name, rloo_k, ...).

| node        | schema                                   | module                  |
|-------------|------------------------------------------|-------------------------|
| task        | TASKS[task.name].config                  | vbon_exp/tasks/*.py     |
| objective   | OBJECTIVES[objective.name].config        | vbon_exp/objectives/*.py|
| algo        | RLConfig                                 | vbon_exp/trainers/on_policy.py |
| sft         | SFTConfig                                | vbon_exp/trainers/sft.py |
| preference  | PreferenceTrainConfig                    | vbon_exp/trainers/preference_loop.py |
| model       | ModelConfig (language-model tasks)       | vbon_exp/modeling.py    |
| reward      | REWARDS[reward.type].config (LM tasks)   | vbon_exp/rewards.py     |
| sampling    | SamplingConfig (the sampler group too)   | vbon_exp/sampling.py    |
| reference   | ReferenceConfig                          | vbon_exp/reference.py   |
| eval        | EvalConfig                               | vbon_exp/evaluation/runner.py |
| eval.judges | REWARDS[type].config of conf/reward/<name>.yaml | vbon_exp/rewards.py |
| train       | TrainConfig                              | vbon_exp/trainers/shared.py |
| wandb       | WandbConfig                              | vbon_exp/tracking.py    |
| paths, seed, device, threads | PathsConfig, RunConfig  | here                    |
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Union

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from vbon_exp import (
    bon,
    vllm_backend,  # noqa: F401  (registers sampler=vllm)
)
from vbon_exp.errors import ConfigError, check_number
from vbon_exp.evaluation import EvalConfig
from vbon_exp.modeling import ModelConfig
from vbon_exp.objectives import OBJECTIVES
from vbon_exp.reference import ReferenceConfig, cache_memory_bytes
from vbon_exp.rewards import REWARDS
from vbon_exp.sampling import SamplingConfig
from vbon_exp.tasks import TASKS
from vbon_exp.tracking import WandbConfig
from vbon_exp.trainers.on_policy import RLConfig
from vbon_exp.trainers.preference_loop import PreferenceTrainConfig
from vbon_exp.trainers.sft import SFTConfig
from vbon_exp.trainers.shared import TrainConfig

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the top-level nodes


@dataclass
class PathsConfig:
    """conf `paths:`: where things are written. Relative paths are relative to the directory you run from."""

    # Root of all run output (Hydra run dirs, sweeps, caches). Ignored by git.
    output_root: str = "outputs"
    # Reference caches and built artifacts (the synthetic task's model).
    cache_dir: str = "${paths.output_root}/cache"


@dataclass
class RunConfig:
    """The top-level scalars of conf/config.yaml."""

    # Random seed (integer): sampling, training and evaluation draws all derive from it.
    seed: int = 0
    # Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...
    device: str = "auto"
    # Torch's CPU threads: auto ($OMP_NUM_THREADS when set, else usable cores / the launcher's parallel jobs, never
    # more than the cores other processes leave idle; at least 1) or an integer ≥ 1 (vbon_exp/threads.py).
    threads: Union[int, str] = "auto"

    def check(self, prefix: str = "") -> None:
        check_number("seed", self.seed, integer=True)
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device must be auto, cpu or cuda[:i], got {self.device!r}")
        if self.threads != "auto":
            check_number("threads", self.threads, integer=True, minimum=1)


# node -> schema of the nodes with one schema
FIXED_NODES = {
    "sampling": SamplingConfig, "reference": ReferenceConfig, "eval": EvalConfig, "train": TrainConfig,
    "wandb": WandbConfig, "paths": PathsConfig, "algo": RLConfig, "sft": SFTConfig,
    "preference": PreferenceTrainConfig,
}
TOP_LEVEL = {"task", "objective", "algo", "sft", "preference", "seed", "device", "threads", "plan", "sampling",
             "reference", "eval", "train", "wandb", "paths", "model", "reward",
             "hydra"}  # hydra: present when composed with return_hydra_config


def register_schemas() -> None:
    """Every schema in Hydra's ConfigStore, named by the YAML defaults lists (`/schema/<node>[/<kind>]`)."""
    cs = ConfigStore.instance()
    for node, schema in FIXED_NODES.items():
        cs.store(group=f"schema/{node}", name="base", node=schema)
    cs.store(group="schema/model", name="base", node=ModelConfig)
    for name, kind in TASKS.items():
        cs.store(group="schema/task", name=name, node=kind.config)
    for name, objective in OBJECTIVES.items():
        cs.store(group="schema/objective", name=name, node=objective.config)
    for name, kind in REWARDS.items():
        cs.store(group="schema/reward", name=name, node=kind.config)


# --------------------------------------------------------------------------- N <-> β resolvers


def _or_none(fn, value):
    try:
        return fn(float(value))
    except (TypeError, ValueError):
        return None


def _whole_if_close(n):
    """N = 1/β + 1 computed in floating point (1/(1/15) + 1 = 15.999…): the integer when within 1e-9 of one."""
    if n is not None and abs(n - round(n)) <= 1e-9 * max(1.0, abs(n)):
        return int(round(n))
    return n


def _n_from_beta_if_set(default, *, _parent_):
    """`${n_from_beta_if_set:4}` (bon, bon_sft): N = 1/β + 1 when the objective's `beta` was set to a value (a β
    sweep shared with vbon and kl_rl), else `default`. `beta` itself is `${beta_from_n:${.n}}`: whichever of the
    two the user sets, the other follows, with no cycle (this looks at `beta` only when it is not derived)."""
    if "beta" not in _parent_ or OmegaConf.is_interpolation(_parent_, "beta"):
        return default
    return _whole_if_close(_or_none(bon.n_from_beta, _parent_.beta))


def register_resolvers() -> None:
    """`${n_from_beta:${.beta}}` and `${beta_from_n:${.n}}` tie N and β together (N = 1/β + 1, vbon_exp.bon) in
    objective configs: each objective sets one and derives the other; `${n_from_beta_if_set:4}` lets bon and bon_sft
    take either (N by default, β in sweeps). An invalid value gives null, which the objective's check names."""
    resolvers = (("n_from_beta", lambda beta: _or_none(bon.n_from_beta, beta)),
                 ("beta_from_n", lambda n: _or_none(bon.beta_from_n, n)),
                 ("n_from_beta_if_set", _n_from_beta_if_set))
    for name, fn in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
register_schemas()


# --------------------------------------------------------------------------- validation


def _field_names(schema) -> str:
    return ", ".join(f.name for f in fields(schema))


def typed_node(cfg: DictConfig, key: str, schema):
    """The node at `key` merged into `schema` and returned as the dataclass; ConfigError names the bad key."""
    try:
        node = OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: {_first_line(err)}") from None
    if node is None:
        raise ConfigError(f"{key} is missing (a mapping of {_field_names(schema)})")
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{key} must be a mapping of settings, got {node!r}")
    try:
        values = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}.{_full_key(err)}: {_first_line(err)}") from None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        raise ConfigError(f"unknown key {key}.{_full_key(err)}; {key} takes {_field_names(schema)}") from None
    except MissingMandatoryValue as err:
        raise ConfigError(f"{key}.{_full_key(err)} must be set") from None
    except ValidationError as err:
        raise ConfigError(f"{key}.{_full_key(err)}: {_first_line(err)}") from None


def _full_key(err: OmegaConfBaseException) -> str:
    return str(getattr(err, "full_key", "") or "?")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _choose(cfg: DictConfig, key: str, registry: dict, what: str):
    name = OmegaConf.select(cfg, key)
    if name not in registry:
        raise ConfigError(f"{key} must be one of {sorted(registry)}, got {name!r} ({what})")
    return registry[name]


def validate(cfg: DictConfig) -> SimpleNamespace:
    """Check every value a run depends on; raise ConfigError naming the first bad key. Returns the typed nodes
    (dataclasses) by name: task, objective, algo, sampling, reference, eval, train, wandb, paths, run, model, reward
    (model and reward None on tasks that do not read them), judges (name -> reward config of eval.judges)."""
    unknown = sorted(set(cfg.keys()) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; known: {sorted(TOP_LEVEL - {'hydra'})}")
    try:
        run = RunConfig(seed=cfg.seed, device=cfg.device, threads=cfg.get("threads", "auto"))
    except OmegaConfBaseException as err:
        raise ConfigError(_first_line(err)) from None
    run.check()
    out = SimpleNamespace(run=run, model=None, reward=None)
    for key, schema in FIXED_NODES.items():
        setattr(out, key, typed_node(cfg, key, schema))
    task_kind = _choose(cfg, "task.name", TASKS, "conf/task/<name>.yaml")
    objective_cls = _choose(cfg, "objective.name", OBJECTIVES, "conf/objective/<name>.yaml")
    out.task = typed_node(cfg, "task", task_kind.config)
    out.objective = take_whole_n(cfg, typed_node(cfg, "objective", objective_cls.config))
    if task_kind.uses_model_groups:
        out.model = typed_node(cfg, "model", ModelConfig)
        reward_kind = _choose(cfg, "reward.type", REWARDS, "conf/reward/<name>.yaml")
        out.reward = typed_node(cfg, "reward", reward_kind.config)
    out.judges = judge_configs(cfg, out.eval.judges, task_kind.uses_model_groups)
    for key in ("sampling", "reference", "eval", "train", "wandb", "task", "objective", "model", "reward"):
        node = getattr(out, key)
        if node is not None:
            node.check(key)
    for name, judge in out.judges.items():
        judge.check(f"eval.judges.{name}")
    if objective_cls.trains_with is not None:  # the trainer node the objective reads (algo | sft | preference)
        getattr(out, objective_cls.trains_with).check(objective_cls.trains_with)
    if objective_cls.trains_with == "algo" and out.train.lora.enabled and out.train.lora.dropout > 0:
        raise ConfigError(f"train.lora.dropout={out.train.lora.dropout} with objective={cfg.objective.name}: the RL "
                          "trainers need dropout 0 (the rollout's and the update's log-probs must be one function)")
    for key in ("task", "objective"):  # rules that tie a node to the rest of the run
        if hasattr(getattr(out, key), "check_run"):
            getattr(out, key).check_run(cfg)
    check_memory(out)
    return out


def take_whole_n(cfg: DictConfig, node):
    """The one rule for every objective that needs a whole N (`needs_whole_n`): a β within a relative 1e-4 of
    1/(N − 1) is that N (vbon_exp.bon.whole_n), so `objective.beta=0.1428571` runs BoN, DPO or BOND at N = 8 as it
    runs vBoN. N and β = 1/(N − 1) are then set in the node and in the run's config (the results columns), with one
    log line; any other β is left to the objective's own check, whose error names the key."""
    n = bon.whole_n(node.beta) if node.needs_whole_n() else None
    if n is None or (node.n == n and node.beta == 1.0 / (n - 1)):
        return node
    if isinstance(node.n, (int, float)) and abs(node.n - n) > bon.WHOLE_N_RTOL * n:
        return node  # an N set apart from β that disagrees with it: the objective's check names both
    beta = 1.0 / (n - 1)
    log.info("objective.beta=%r is taken as N = %d (β = 1/%d = %r, within a relative %g of it)", node.beta, n, n - 1,
             beta, bon.WHOLE_N_RTOL)
    node.n, node.beta = n, beta
    try:
        cfg.objective.n, cfg.objective.beta = n, beta
    except OmegaConfBaseException:  # a read-only config: the typed node carries the values
        pass
    return node


# --------------------------------------------------------------------------- evaluation judges

# The config dir of `python -m vbon_exp` (its @hydra.main config_path), for judges named outside a Hydra app.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def judge_configs(cfg: DictConfig, names: list[str], text_task: bool) -> dict:
    """`eval.judges`: each name is a reward option, conf/reward/<name>.yaml, composed by Hydra as `reward=<name>`
    would compose it (its schema REWARDS[type].config fills the defaults) and checked like the `reward` node; its
    interpolations (`${paths.output_root}`) resolve against the run's config. Returns name -> config dataclass."""
    if not names:
        return {}
    if not text_task:
        raise ConfigError(f"eval.judges={list(names)}: judges score text, and task={cfg.task.name} has none; use "
                          "them on a language-model task (imdb, tldr)")
    holder = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # an untyped copy of the run's config
    holder.eval.judges = _compose_reward_options(list(names))
    out = {}
    for name in names:
        kind = _choose(holder, f"eval.judges.{name}.type", REWARDS, f"conf/reward/{name}.yaml")
        out[name] = typed_node(holder, f"eval.judges.{name}", kind.config)
    return out


def _compose_reward_options(names: list[str]) -> dict:
    """conf/reward/<name>.yaml of each name, composed through Hydra's config search path: the running app's inside
    `python -m vbon_exp` (so `--config-dir` and search-path additions count), else CONF_DIR."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def composed() -> dict:
        options = GlobalHydra.instance().config_loader().get_group_options("reward")
        unknown = [name for name in names if name not in options]
        if unknown:
            raise ConfigError(f"eval.judges: no reward config named {unknown}; a judge is a reward config, "
                              f"conf/reward/<name>.yaml, one of {options}")
        return {name: compose(f"reward/{name}").reward for name in names}

    if GlobalHydra.instance().is_initialized():
        return composed()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return composed()


# --------------------------------------------------------------------------- memory pre-flight


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(nodes: SimpleNamespace, available: int | None = None, vocab_size: int | None = None) -> None:
    """Stop before anything is built when the reference caches or the evaluation samples cannot fit in memory:
    the error names the key that sets the size, the estimate and what is available. A lower bound of what the run
    holds. Vocabulary-sized logits are counted where the vocabulary is known: from the task's config (synthetic)
    before anything loads, and again with `vocab_size` once the models are loaded, before any sampling (run.py)."""
    available = available_memory_bytes() if available is None else available
    if available is None or os.environ.get("VBON_EXP_SKIP_MEMORY_CHECK") == "1":
        return
    sizes = nodes.task.sizes()
    if vocab_size is not None:
        sizes["vocab_size"] = vocab_size
    sequence = sizes["prompt_tokens"] + nodes.sampling.max_new_tokens
    splits = [("test", sizes["num_test_prompts"])] * evaluation_test_caches(nodes)
    objective = OBJECTIVES[nodes.objective.name](nodes.objective)
    if "train" in objective.cache_splits:  # its own cache (split in the key)
        splits.append(("train", sizes["num_train_prompts"]))
    ref = nodes.reference
    cache = sum(cache_memory_bytes(p, ref.m_for(split), ref.chunk_prompts, sequence) for split, p in splits)
    key = "reference.test_m" if ref.test_m is not None and ref.test_m > ref.m else "reference.m"
    _fits(key, max(ref.m, ref.test_m or 0), cache, available,
          f"reference caches of {sum(p for _, p in splits)} prompts × M={ref.m}"
          + (f" (test: {ref.test_m})" if ref.test_m is not None else ""))
    for name, m in objective.evaluation_caches(nodes.eval).items():  # e.g. the BoN pool: as many as test caches
        held = (1 + int(_evaluates_elsewhere(nodes))) * cache_memory_bytes(
            sizes["num_test_prompts"], m, ref.chunk_prompts, sequence)
        key, what = ("eval.bon_pool_m", "BoN pool") if name == "bon_pool" else (f"the {name} cache", name)
        _fits(key, m, cache + held, available,
              f"the {what} of {sizes['num_test_prompts']} prompts × M={m} and the reference caches")
    evaluation = nodes.eval.memory_bytes(sizes["num_test_prompts"], sequence, nodes.sampling.max_new_tokens,
                                         sizes["vocab_size"] or 0)
    _fits("eval.samples_per_prompt", nodes.eval.samples_per_prompt, evaluation, available,
          f"evaluation samples of {sizes['num_test_prompts']} prompts × {nodes.eval.samples_per_prompt}")


def evaluation_test_caches(nodes: SimpleNamespace) -> int:
    """Test-prompt reference caches held at once: the one at the sampling temperature, and while one other
    evaluation temperature is measured its own cache, plus one per judge (the temperatures run one after another)."""
    return 1 + int(_evaluates_elsewhere(nodes)) + len(getattr(nodes, "judges", None) or ())


def _evaluates_elsewhere(nodes: SimpleNamespace) -> bool:
    """Whether an evaluation temperature differs from the sampling temperature (its caches are then built too)."""
    temperatures = nodes.eval.temperatures or [nodes.sampling.temperature]
    return any(t != nodes.sampling.temperature for t in temperatures)


def _fits(key: str, value, estimate: int, available: int, what: str) -> None:
    if estimate > 0.8 * available:  # the rest: models, the interpreter, the allocator's slack
        raise ConfigError(
            f"{key}={value} needs at least {estimate / 2**30:.1f} GiB ({what}), but only {available / 2**30:.1f} "
            f"GiB of memory is available; lower {key} (set VBON_EXP_SKIP_MEMORY_CHECK=1 to run anyway)"
        )
