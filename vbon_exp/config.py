"""The config schema and start-up validation: bad input fails here, naming the key, before any model loads.

Every config node has one dataclass in vbon_exp/settings/ (its fields, types, defaults and a comment
per key, and a `check` for values). They are registered with Hydra's ConfigStore under `schema/...` and named in the
YAML defaults lists (`- /schema/algo@_here_`), so Hydra composes typed nodes: a typo (`algo.lrr=1`) or a wrong type
(`algo.lr=fast`) stops at composition. `validate` then merges every composed node into its schema again, which
also rejects keys added with `+` (Hydra lets `+` add keys even to typed nodes), and runs every value check, the
cross-key rules, and a pre-flight estimate of the memory the run will hold. YAML files hold no default of their
own: only the values that make an option what it is (`conf/algo/rloo.yaml`: name, rloo_k, ...).

| node        | settings (vbon_exp/settings/)              | implemented in             |
|-------------|--------------------------------------------|----------------------------|
| task        | task.py: TASK_SETTINGS[task.name]          | vbon_exp/tasks/*.py        |
| objective   | objective.py: OBJECTIVE_SETTINGS[name]     | vbon_exp/objectives/*.py   |
| algo        | algo.py: RLConfig                          | vbon_exp/trainers/on_policy.py |
| sft, preference, train | train.py                        | vbon_exp/trainers/         |
| model       | model.py: ModelConfig (language-model tasks) | vbon_exp/modeling.py     |
| reward      | reward.py: REWARD_SETTINGS[reward.type]    | vbon_exp/rewards.py        |
| sampling    | sampling.py: SamplingConfig                | vbon_exp/sampling.py       |
| reference   | reference.py: ReferenceConfig              | vbon_exp/reference.py      |
| eval        | eval.py: EvalConfig                        | vbon_exp/evaluation/runner.py |
| eval.judges | reward.py, of conf/reward/<name>.yaml      | vbon_exp/rewards.py        |
| wandb       | wandb.py: WandbConfig                      | vbon_exp/tracking.py       |
| paths, seed, device, threads | run.py: PathsConfig, RunConfig | here                 |

This module and vbon_exp/settings import no torch, transformers or pandas: a bad config is answered before they
load. `validate` returns one RunSettings; the run never reads the composed config again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from vbon_exp.errors import ConfigError
from vbon_exp.launch import CONF_DIR
from vbon_exp.settings import beta_n
from vbon_exp.settings.algo import RLConfig
from vbon_exp.settings.eval import EvalConfig
from vbon_exp.settings.model import ModelConfig
from vbon_exp.settings.objective import OBJECTIVE_SETTINGS
from vbon_exp.settings.reference import ReferenceConfig, cache_memory_bytes
from vbon_exp.settings.reward import REWARD_SETTINGS
from vbon_exp.settings.run import PathsConfig, RunConfig, RunSettings
from vbon_exp.settings.sampling import SamplingConfig
from vbon_exp.settings.task import TASK_SETTINGS
from vbon_exp.settings.train import PreferenceTrainConfig, SFTConfig, TrainConfig
from vbon_exp.settings.wandb import WandbConfig

log = logging.getLogger(__name__)

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
    for group, registry in (("task", TASK_SETTINGS), ("objective", OBJECTIVE_SETTINGS), ("reward", REWARD_SETTINGS)):
        for name, schema in registry.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)


def schema_catalogue() -> list[tuple[str, type]]:
    """Every config node and its schema dataclass, in reading order: (node, schema). Options of a group (a task, an
    objective, a reward type) are named `<node>=<option>` (`objective=vbon`). The config reference in docs/config.md
    is generated from this (scripts/config_reference.py)."""
    out = [("seed, device, threads", RunConfig), ("paths", PathsConfig)]
    out += [(f"task={name}", schema) for name, schema in sorted(TASK_SETTINGS.items())]
    out += [(f"objective={name}", schema) for name, schema in sorted(OBJECTIVE_SETTINGS.items())]
    out += [(node, schema) for node, schema in FIXED_NODES.items() if node != "paths"]
    out += [("model", ModelConfig)]
    out += [(f"reward (type={name})", schema) for name, schema in sorted(REWARD_SETTINGS.items())]
    return out


register_schemas()  # the (β, N) resolvers are registered by vbon_exp.settings.beta_n


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


def validate(cfg: DictConfig) -> RunSettings:
    """Check every value a run depends on; raise ConfigError naming the first bad key. Returns the run's settings,
    every node as its dataclass (model and reward None on tasks that do not read them; judges: name -> the reward
    settings of each of eval.judges). The composed config is read here and never again, nor written to."""
    unknown = sorted(set(cfg.keys()) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; known: {sorted(TOP_LEVEL - {'hydra'})}")
    try:
        run = RunConfig(seed=cfg.seed, device=cfg.device, threads=cfg.get("threads", "auto"))
    except OmegaConfBaseException as err:
        raise ConfigError(_first_line(err)) from None
    run.check()
    nodes = {key: typed_node(cfg, key, schema) for key, schema in FIXED_NODES.items()}
    task_schema = _choose(cfg, "task.name", TASK_SETTINGS, "conf/task/<name>.yaml")
    objective_schema = _choose(cfg, "objective.name", OBJECTIVE_SETTINGS, "conf/objective/<name>.yaml")
    nodes["task"] = typed_node(cfg, "task", task_schema)
    nodes["objective"] = take_whole_n(typed_node(cfg, "objective", objective_schema))
    if task_schema.uses_model_groups:
        nodes["model"] = typed_node(cfg, "model", ModelConfig)
        reward_schema = _choose(cfg, "reward.type", REWARD_SETTINGS, "conf/reward/<name>.yaml")
        nodes["reward"] = typed_node(cfg, "reward", reward_schema)
    judges = judge_configs(cfg, nodes["eval"].judges, task_schema.uses_model_groups)
    settings = RunSettings(run=run, judges=judges, **nodes)
    check_settings(settings)
    check_memory(settings)
    return settings


def task_nodes(cfg: DictConfig) -> tuple:
    """(task, model, reward) as their dataclasses, validated alone (model and reward None on tasks that do not read
    them): what identifies a run's task variant when another node of its config is bad (a failed sweep member)."""
    task_schema = _choose(cfg, "task.name", TASK_SETTINGS, "conf/task/<name>.yaml")
    task = typed_node(cfg, "task", task_schema)
    if not task_schema.uses_model_groups:
        return task, None, None
    reward_schema = _choose(cfg, "reward.type", REWARD_SETTINGS, "conf/reward/<name>.yaml")
    return task, typed_node(cfg, "model", ModelConfig), typed_node(cfg, "reward", reward_schema)


def check_settings(settings: RunSettings) -> None:
    """Every node's value checks, the trainer node the objective reads, and the rules that tie nodes together."""
    for key in ("sampling", "reference", "eval", "train", "wandb", "task", "objective", "model", "reward"):
        node = getattr(settings, key)
        if node is not None:
            node.check(key)
    for name, judge in settings.judges.items():
        judge.check(f"eval.judges.{name}")
    kind = settings.objective.trains_with  # the trainer node the objective reads (algo | sft | preference)
    if kind is not None:
        getattr(settings, kind).check(kind)
    if kind == "algo" and settings.train.lora.enabled and settings.train.lora.dropout > 0:
        raise ConfigError(f"train.lora.dropout={settings.train.lora.dropout} with objective={settings.objective.name}"
                          ": the RL trainers need dropout 0 (the rollout's and the update's log-probs must be one "
                          "function); adapter dropout applies in the SFT and preference loops")
    for key in ("task", "objective"):  # rules that tie a node to the rest of the run
        if hasattr(getattr(settings, key), "check_run"):
            getattr(settings, key).check_run(settings)


def take_whole_n(node):
    """The one rule for every objective that needs a whole N (`needs_whole_n`): a β within a relative 1e-4 of
    1/(N − 1) is that N (vbon_exp.settings.beta_n.whole_n), so `objective.beta=0.1428571` runs BoN, DPO or BOND at
    N = 8 as it runs vBoN. N and β = 1/(N − 1) are then set in the settings (and so in the results columns), with
    one log line; any other β is left to the objective's own check, whose error names the key."""
    n = beta_n.whole_n(node.beta) if node.needs_whole_n() else None
    if n is None or (node.n == n and node.beta == 1.0 / (n - 1)):
        return node
    if isinstance(node.n, (int, float)) and abs(node.n - n) > beta_n.WHOLE_N_RTOL * n:
        return node  # an N set apart from β that disagrees with it: the objective's check names both
    beta = 1.0 / (n - 1)
    log.info("objective.beta=%r is taken as N = %d (β = 1/%d = %r, within a relative %g of it)", node.beta, n, n - 1,
             beta, beta_n.WHOLE_N_RTOL)
    node.n, node.beta = n, beta
    return node


# --------------------------------------------------------------------------- evaluation judges

def judge_configs(cfg: DictConfig, names: list[str], text_task: bool) -> dict:
    """`eval.judges`: each name is a reward option, conf/reward/<name>.yaml, composed by Hydra as `reward=<name>`
    would compose it (its schema REWARD_SETTINGS[type] fills the defaults) and checked like the `reward` node; its
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
        schema = _choose(holder, f"eval.judges.{name}.type", REWARD_SETTINGS, f"conf/reward/{name}.yaml")
        out[name] = typed_node(holder, f"eval.judges.{name}", schema)
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


def check_memory(nodes: RunSettings, available: int | None = None, vocab_size: int | None = None) -> None:
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
    objective = nodes.objective
    if "train" in objective.cache_splits():  # its own cache (split in the key)
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


def evaluation_test_caches(nodes: RunSettings) -> int:
    """Test-prompt reference caches held at once: the one at the sampling temperature, and while one other
    evaluation temperature is measured its own cache, plus one per judge (the temperatures run one after another)."""
    return 1 + int(_evaluates_elsewhere(nodes)) + len(getattr(nodes, "judges", None) or ())


def _evaluates_elsewhere(nodes: RunSettings) -> bool:
    """Whether an evaluation temperature differs from the sampling temperature (its caches are then built too)."""
    temperatures = nodes.eval.temperatures_at(nodes.sampling.temperature)
    return any(t != nodes.sampling.temperature for t in temperatures)


def _fits(key: str, value, estimate: int, available: int, what: str) -> None:
    if estimate > 0.8 * available:  # the rest: models, the interpreter, the allocator's slack
        raise ConfigError(
            f"{key}={value} needs at least {estimate / 2**30:.1f} GiB ({what}), but only {available / 2**30:.1f} "
            f"GiB of memory is available; lower {key} (set VBON_EXP_SKIP_MEMORY_CHECK=1 to run anyway)"
        )
