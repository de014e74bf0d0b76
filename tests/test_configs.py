"""Every task × objective × algo composes, validates and instantiates (with tiny stand-in models), so a broken
config is caught by `make test`, not by a user. Also: every config key carries a comment."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import vbon_exp.config as config
from test_tasks import FAST, task_overrides
from tiny_artifacts import artifacts  # noqa: F401  (a fixture)
from vbon_exp.objectives import OBJECTIVES, build_objective
from vbon_exp.tasks.base import build_task
from vbon_exp.trainers import ALGOS, RLConfig
from vbon_exp.trainers.sft import SFTConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
OBJECTIVE_NAMES = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))
ALGO_NAMES = sorted(p.stem for p in (CONF / "algo").glob("*.yaml"))


def test_the_groups_and_the_registries_agree():
    assert set(OBJECTIVE_NAMES) == set(OBJECTIVES)
    assert set(ALGO_NAMES) == set(ALGOS)
    assert {"synthetic", "imdb", "tldr"} <= set(TASKS)


@pytest.fixture(scope="module")
def built_tasks(tmp_path_factory, artifacts):  # noqa: F811
    """One instantiated task per task config (model loads are the slow part)."""
    out = {}
    for task in TASKS:
        tmp = tmp_path_factory.mktemp(task)
        overrides = task_overrides(task, artifacts) if task != "synthetic" else []
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"paths.output_root={tmp}", *overrides, *FAST])
        out[task] = (build_task(cfg, torch.device("cpu")), tmp, overrides)
    return out


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("objective", OBJECTIVE_NAMES)
@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_every_combination_composes_validates_and_instantiates(built_tasks, task, objective, algo):
    built, tmp, overrides = built_tasks[task]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.output_root={tmp}", *overrides, f"objective={objective}",
                                           f"algo={algo}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    config.validate(cfg)
    obj = build_objective(cfg.objective)
    assert obj.name == objective
    if objective in ("vbon", "kl_rl"):
        assert RLConfig.from_dict(OmegaConf.to_container(cfg.algo)).name == algo
    if objective == "bon_sft":
        SFTConfig.from_dict(OmegaConf.to_container(cfg.objective.sft))
    assert built.name == task and len(built.train_prompts) > 0 and len(built.test_prompts) > 0


def _keys_without_comment(path: Path) -> list[str]:
    """Top-level and nested keys of a YAML file whose line has no comment on the line(s) directly above it, or
    beside it; keys inside a commented block (a run of keys under one comment, like n_layer/n_embd) pass."""
    lines = path.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        key = stripped.split(":", 1)[0]
        if key in ("defaults", "_target_", "hydra", "run", "sweep", "job", "help", "dir", "subdir", "chdir",
                   "name", "app_name") and path.name == "config.yaml" or key == "_target_":
            continue
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


# Presets that only re-set keys documented where they are defined (a comment at the top says what they change).
OVERRIDE_ONLY = ("task_algo", "task_objective", "experiment")


def test_every_config_key_has_a_comment():
    homes = [p for p in sorted(CONF.rglob("*.yaml")) if p.relative_to(CONF).parts[0] not in OVERRIDE_ONLY]
    missing = [m for p in homes for m in _keys_without_comment(p)]
    assert not missing, "keys without a comment:\n" + "\n".join(missing)
