"""vbon_exp/config.py: every task × objective × algo composes, validates and instantiates (with tiny stand-in
models), so a broken config is caught by `make test`, not by a user; a typo in any node is refused naming the key;
every config key carries a comment, in its dataclass or YAML file; the memory pre-flight names the key."""

import ast
import inspect
import textwrap
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import torch
from conftest import build_task_from_config
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from test_tasks import FAST, task_overrides
from tiny_artifacts import artifacts  # noqa: F401  (a fixture)

import vbon_exp.config as config
from vbon_exp.bon import REWARD_TRANSFORMS
from vbon_exp.errors import ConfigError
from vbon_exp.objectives import OBJECTIVES, build_objective
from vbon_exp.settings.objective import OBJECTIVE_SETTINGS
from vbon_exp.settings.run import RunSettings
from vbon_exp.tasks import TASKS as TASK_REGISTRY
from vbon_exp.trainers import ALGOS

CONF = Path(__file__).resolve().parents[1] / "conf"
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
OBJECTIVE_NAMES = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))
ALGO_NAMES = sorted(p.stem for p in (CONF / "algo").glob("*.yaml"))


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_the_groups_and_the_registries_agree():
    """One option per registered objective, named for it; a variant option (e.g. vbon_seed: vbon as the seed code
    ran it) is `<objective>_<variant>` and composes to its objective's name."""
    composed = {option: _compose(f"objective={option}").objective.name for option in OBJECTIVE_NAMES}
    assert set(composed.values()) == set(OBJECTIVES)
    for option, name in composed.items():
        assert option == name or option.startswith(f"{name}_"), option
    assert set(ALGO_NAMES) == set(ALGOS)
    assert set(TASKS) == set(TASK_REGISTRY)


def test_each_transform_option_is_kl_rl_with_that_transform():
    """conf/objective/kl_rl_<transform>.yaml: one option per calibrated transform of issue 14 (InfAlign's cdf and
    exp_cdf, vBoN's log_cdf; `exact` is vBoN's exact bound, reached as objective=vbon bound=exact), for a sweep's
    objective axis; each composes to kl_rl with exactly its transform (a misspelt file or transform fails here)."""
    options = [o for o in OBJECTIVE_NAMES if o.startswith("kl_rl_")]
    assert sorted(o.removeprefix("kl_rl_") for o in options) == ["cdf", "exp_cdf", "log_cdf"]
    assert {o.removeprefix("kl_rl_") for o in options} <= set(REWARD_TRANSFORMS)
    for option in options:
        node = config.validate(_compose(f"objective={option}")).objective
        assert (node.name, node.transform) == ("kl_rl", option.removeprefix("kl_rl_"))


# keys an objective option needs from the user (no default can stand for them)
REQUIRED = {"external": ["objective.policy=a/policy/dir"]}


def _objective_of(option: str) -> str:
    """The registered objective an option composes to: itself, or the longest registered prefix of a variant
    (vbon_seed -> vbon, kl_rl_exp_cdf -> kl_rl)."""
    return max((name for name in OBJECTIVES if option == name or option.startswith(f"{name}_")), key=len)


@pytest.fixture(scope="module")
def built_tasks(tmp_path_factory, artifacts):  # noqa: F811
    """One instantiated task per task config (model loads are the slow part)."""
    out = {}
    for task in TASKS:
        tmp = tmp_path_factory.mktemp(task)
        overrides = task_overrides(task, artifacts) if task != "synthetic" else []
        fast = [o for o in FAST if task != "synthetic" or not o.startswith("sampling.max_new_tokens")]
        cfg = _compose(f"paths.output_root={tmp}", *overrides, *fast)
        out[task] = (build_task_from_config(cfg), tmp, overrides)
    return out


def _pairwise(algo: str, objective: str, task: str) -> bool:
    """Whether (algo, objective, task) is in the fast tier's covering array: objective i with algo j on task
    (i + j) mod |tasks| holds every objective × algo pair, every objective × task pair (|algos| ≥ |tasks|) and every
    algo × task pair: each two-way interaction of the three options is composed in the fast tier (|objectives| ×
    |algos| compositions), every combination with `make test-all`."""
    i, j = OBJECTIVE_NAMES.index(objective), ALGO_NAMES.index(algo)
    return TASKS[(i + j) % len(TASKS)] == task


COMBINATIONS = [pytest.param(a, o, t, id=f"{a}-{o}-{t}", marks=() if _pairwise(a, o, t) else pytest.mark.slow)
                for t in TASKS for o in OBJECTIVE_NAMES for a in ALGO_NAMES]


@pytest.mark.parametrize("algo,objective,task", COMBINATIONS)
def test_every_combination_composes_validates_and_instantiates(built_tasks, task, objective, algo):
    built, tmp, overrides = built_tasks[task]
    cfg = _compose(f"paths.output_root={tmp}", *overrides, f"objective={objective}", *REQUIRED.get(objective, []),
                   f"algo={algo}")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    allowed = getattr(OBJECTIVE_SETTINGS[_objective_of(objective)], "algos", None)
    if allowed is not None and algo not in allowed:  # e.g. bon_aware's group estimator: one clear error instead
        with pytest.raises(ConfigError, match=r"algo\.name"):
            config.validate(cfg)
        return
    nodes = config.validate(cfg)
    obj = build_objective(nodes.objective)
    base = _objective_of(objective)
    assert obj.name == base and type(nodes.objective) is OBJECTIVES[base].config is OBJECTIVE_SETTINGS[base]
    assert nodes.algo.name == algo
    assert built.name == task and len(built.train_prompts) > 0 and len(built.test_prompts) > 0


# --------------------------------------------------------------------------- typos in every node

# node -> the options that give it a schema of its own (one composition per option)
NODE_OPTIONS = {
    "task": [[f"task={t}"] for t in TASKS],
    "objective": [[f"objective={o}", *REQUIRED.get(o, [])] for o in OBJECTIVE_NAMES],
    "algo": [[f"algo={a}"] for a in ALGO_NAMES],
    "model": [["task=imdb", f"model={m}"] for m in sorted(p.stem for p in (CONF / "model").glob("*.yaml"))],
    "reward": [["task=imdb", f"reward={r}"] for r in sorted(p.stem for p in (CONF / "reward").glob("*.yaml"))],
    "sampling": [[f"sampler={s}"] for s in sorted(p.stem for p in (CONF / "sampler").glob("*.yaml"))],
    **{node: [[]] for node in ("reference", "eval", "train", "wandb", "paths", "sft", "preference")},
}
# every node in the fast tier with its first option; its other options (another schema each) with `make test-all`
TYPO_CASES = [pytest.param(node, options, id=f"{node}-{'-'.join(options) or 'default'}",
                           marks=() if i == 0 else pytest.mark.slow)
              for node, cases in NODE_OPTIONS.items() for i, options in enumerate(cases)]


@pytest.mark.parametrize("node,options", TYPO_CASES)
def test_a_typo_in_any_node_is_refused_naming_the_key(tmp_path, node, options):
    """With `+` Hydra adds the key (even to a typed node): validate refuses it. Without `+` Hydra refuses it."""
    from hydra.errors import ConfigCompositionException

    base = [f"paths.output_root={tmp_path}", *options]
    config.validate(_compose(*base))  # the option itself is valid
    with pytest.raises(ConfigError, match=rf"unknown key {node}\.not_a_key"):
        config.validate(_compose(*base, f"+{node}.not_a_key=1"))
    with pytest.raises(ConfigCompositionException, match=rf"{node}\.not_a_key"):
        _compose(*base, f"{node}.not_a_key=1")


def test_an_unknown_top_level_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not_a_node"):
        config.validate(_compose(f"paths.output_root={tmp_path}", "+not_a_node=1"))


# --------------------------------------------------------------------------- the memory pre-flight


def test_memory_preflight_names_the_key_the_estimate_and_what_is_available(tmp_path):
    nodes = config.validate(_compose(f"paths.output_root={tmp_path}"))
    config.check_memory(nodes, available=8 * 2**30)  # the default run fits in 8 GiB
    nodes.reference.m = 10**9
    with pytest.raises(ConfigError, match=r"reference\.m=1000000000 needs at least [\d.]+ GiB .* only 8\.0 GiB"):
        config.check_memory(nodes, available=8 * 2**30)
    nodes.reference.m = 512
    nodes.eval.samples_per_prompt = 10**9
    with pytest.raises(ConfigError, match=r"eval\.samples_per_prompt=1000000000 needs"):
        config.check_memory(nodes, available=8 * 2**30)
    bon = config.validate(_compose(f"paths.output_root={tmp_path}", "objective=bon"))  # estimate=cache: the BoN pool
    config.check_memory(bon, available=8 * 2**30)
    bon.eval.bon_pool_m = 10**9
    with pytest.raises(ConfigError, match=r"eval\.bon_pool_m=1000000000 needs at least [\d.]+ GiB \(the BoN pool"):
        config.check_memory(bon, available=8 * 2**30)
    bon.objective.estimate = "sample"  # no pool then
    config.check_memory(bon, available=8 * 2**30)


# --------------------------------------------------------------------------- comments on every key


def _schemas() -> list[type]:
    """Every dataclass registered in the ConfigStore (and the dataclasses nested in them)."""
    repo = ConfigStore.instance().repo["schema"]
    found, todo = [], []
    for group in repo.values():
        for entry in group.values():
            todo.append(OmegaConf.get_type(entry.node))
    while todo:
        cls = todo.pop()
        if cls in found or not is_dataclass(cls):
            continue
        found.append(cls)
        todo.extend(f.type for f in fields(cls) if isinstance(f.type, type) and is_dataclass(f.type))
    return found


def _fields_without_comment(cls) -> list[str]:
    """Fields of a dataclass without a comment on the line above (or beside) their definition: in the class that
    defines them (a subclass that re-declares a field documents it again)."""
    missing = []
    for owner in cls.__mro__:
        if not is_dataclass(owner) or owner is object:
            continue
        source = textwrap.dedent(inspect.getsource(owner))
        lines = source.splitlines()
        tree = ast.parse(source).body[0]
        for stmt in tree.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                line = lines[stmt.lineno - 1]
                above = lines[stmt.lineno - 2].strip() if stmt.lineno >= 2 else ""
                if not above.startswith("#") and "  # " not in line:
                    missing.append(f"{owner.__module__}.{owner.__name__}.{stmt.target.id}")
    return missing


def test_every_schema_field_has_a_comment():
    schemas = _schemas()
    assert len(schemas) >= 15, schemas  # the nodes, each task, objective and reward kind
    missing = sorted({m for cls in schemas for m in _fields_without_comment(cls)})
    assert not missing, "fields without a comment:\n" + "\n".join(missing)


def _keys_without_comment(path: Path) -> list[str]:
    """Keys of a YAML file with no comment on the line(s) directly above or beside them; keys inside a commented
    block (a run of keys under one comment) pass. Hydra's own settings and defaults lists are skipped."""
    lines = path.read_text().splitlines()
    missing, in_hydra = [], False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not line.startswith(" ") and stripped:
            in_hydra = stripped.startswith(("hydra:", "defaults:"))
        if in_hydra or not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        key = stripped.split(":", 1)[0]
        j = i - 1
        documented = "#" in line.split(":", 1)[1]
        while not documented and j >= 0:
            prev = lines[j].strip()
            if prev.startswith("#"):
                documented = True
            elif not prev or ":" not in prev or prev.endswith(":") or prev.startswith("-"):
                break
            j -= 1
        if not documented:
            missing.append(f"{path.relative_to(CONF)}:{i + 1}: {key}")
    return missing


def test_every_yaml_key_has_a_comment():
    presets = [p for p in sorted(CONF.rglob("*.yaml")) if p.relative_to(CONF).parts[0] != "experiment"]
    missing = [m for p in presets for m in _keys_without_comment(p)]
    assert not missing, "keys without a comment:\n" + "\n".join(missing)


def test_yaml_options_hold_no_default_of_their_schema(tmp_path):
    """One place per default: a group option sets only values that differ from its schema's defaults."""
    checks = {"algo": (ALGO_NAMES, "schema/algo/base.yaml"),
              "objective": (OBJECTIVE_NAMES, None), "task": (TASKS, None)}
    cs = ConfigStore.instance()
    repeated = []
    for group, (options, schema_name) in checks.items():
        for option in options:
            own = OmegaConf.load(CONF / group / f"{option}.yaml")
            schema_option = option if group != "objective" else _objective_of(option)
            name = schema_name or f"schema/{group}/{schema_option}.yaml"
            schema = cs.load(name).node
            for key, value in own.items():
                if key != "defaults" and key in schema and schema[key] == value:
                    repeated.append(f"{group}/{option}.yaml: {key}")
    assert not repeated, repeated


def test_objective_declarations_drive_validation_and_results():
    """What run.py, validation and the results line need comes from each objective's declarations, made once in its
    torch-free settings and copied to its implementation; every implementation has its settings and no other."""
    assert set(OBJECTIVES) == set(OBJECTIVE_SETTINGS)
    for name, cls in OBJECTIVES.items():
        settings = OBJECTIVE_SETTINGS[name]
        assert cls.name == name and cls.label == settings.method_label not in ("", "?")
        assert cls.trains_with == settings.trains_with
        assert settings.trains_with is None or settings.trains_with in config.FIXED_NODES  # algo, sft, preference
        assert is_dataclass(cls.config) and cls.config().name == name
    from vbon_exp.run import base_point

    point = base_point(config.validate(_compose("objective=bon")))
    assert point["algo"] is None and point["objective_label"] == OBJECTIVES["bon"].label
    assert base_point(config.validate(_compose("objective=vbon", "algo=rloo")))["algo"] == "rloo"


def test_validate_returns_every_node_as_its_dataclass(tmp_path):
    nodes = config.validate(_compose(f"paths.output_root={tmp_path}", "task=imdb"))
    assert isinstance(nodes, RunSettings)
    assert type(nodes.task) is TASK_REGISTRY["imdb"].config and nodes.model is not None and nodes.reward is not None
    assert nodes.paths.cache_dir == f"{tmp_path}/cache"  # interpolations resolved
    assert torch.device(nodes.run.device if nodes.run.device != "auto" else "cpu")


# the objectives that read N as a whole number, and how each is given β = 1/7 typed as 0.1428571
WHOLE_N = [("bon", ()), ("bon_sft", ()), ("bond", ()), ("bond_iterative", ()), ("bonbon", ()), ("dpo", ()),
           ("ipo", ()), ("vbon", ("objective.bound=exact",))]


@pytest.mark.parametrize("objective, extra", WHOLE_N)
def test_a_beta_within_1e_4_of_one_over_n_minus_one_is_that_n_for_every_objective(tmp_path, objective, extra, caplog):
    import logging

    cfg = _compose(f"paths.output_root={tmp_path}", f"objective={objective}", "objective.beta=0.1428571", *extra)
    with caplog.at_level(logging.INFO, logger="vbon_exp.config"):
        node = config.validate(cfg).objective
    assert (node.n, node.beta) == (8, 1 / 7)
    assert cfg.objective.beta == 0.1428571  # the composed config is never written to; the settings carry N
    assert caplog.text.count("objective.beta=0.1428571 is taken as N = 8") == 1
    config.validate(cfg)  # validated again (a resumed run): nothing left to round, nothing logged again
    assert caplog.text.count("is taken as N") == 1
    far = _compose(f"paths.output_root={tmp_path}", f"objective={objective}", "objective.beta=0.15", *extra)
    if objective == "vbon":  # the exact bound keeps the seed code's rule for any other β: N = ⌊1/β⌋ + 1, warned
        assert config.validate(far).objective.beta == 0.15
        return
    with pytest.raises(ConfigError, match=r"objective\.(n|pair_n|beta)"):  # not a whole N: one error naming the key
        config.validate(far)


def test_objectives_that_take_any_beta_keep_it(tmp_path):
    for objective, extra in (("vbon", ()), ("kl_rl", ()), ("dpo", ("objective.pair_n=4",))):
        node = config.validate(_compose(f"paths.output_root={tmp_path}", f"objective={objective}",
                                        "objective.beta=0.1428571", *extra)).objective
        assert node.beta == 0.1428571 and node.n == pytest.approx(8.0000021, rel=1e-7)
