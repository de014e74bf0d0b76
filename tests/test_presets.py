"""conf/experiment/: every preset composes and validates for each of its sweep's objectives (hub ids left unresolved,
no model loaded), declares its sweep size truthfully, and holds the values its header says come from the paper or
the seed code. The expected values below are typed in from the sources (the paper's hyperparameter table; rycolab/
vbon's examples/ppo_sentiments.py and trlx default_ppo_config), not read back from the presets."""

import math
import re
from pathlib import Path

import pytest
from conftest import CONF_DIR, compose_config
from omegaconf import OmegaConf

from vbon_exp.config import validate
from vbon_exp.launch import grid_members, sweep_grid

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))

# The paper's IMDB table (TRL's on-policy PPO names) and task (§5).
PAPER_IMDB = {
    "algo.lr": 3e-6, "algo.adam_eps": 1e-5, "algo.schedule": "linear", "algo.batch_size": 32,
    "algo.num_minibatches": 1, "algo.total_episodes": 10_000, "algo.gamma": 1.0, "algo.lam": 0.95,
    "algo.ppo_epochs": 4, "algo.clip": 0.2, "algo.vf_clip": 0.2, "algo.vf_coef": 0.2,
    "task.temperature": 0.7, "task.min_prefix_tokens": 2, "task.max_prefix_tokens": 8,
    "task.num_train_prompts": 5000, "task.num_test_prompts": 512, "reward.output": "prob",
    "reward.name_or_path": "lvwerra/distilbert-imdb", "model.name_or_path": "lvwerra/gpt2-imdb",
}
# What examples/ppo_sentiments.py ran (trlx default_ppo_config of the seed code's fork).
SEED_CODE_IMDB = {
    "task.temperature": 1.0, "task.max_new_tokens": 40, "task.top_k": 0, "task.top_p": 1.0,
    "algo.lr": 3e-5, "algo.adam_betas": [0.9, 0.95], "algo.adam_eps": 1e-8, "algo.weight_decay": 1e-6,
    "algo.schedule": "constant", "algo.trainable_layers": 2, "algo.batch_size": 128, "algo.num_minibatches": 4,
    "algo.ppo_epochs": 4, "algo.gamma": 1.0, "algo.lam": 0.95, "algo.clip": 0.2, "algo.vf_clip": 0.2,
    "algo.vf_coef": 1.0, "algo.reward_clip": 10.0, "reward.output": "logit", "reference.m": 301,
}
PAPER_TLDR = {"objective.beta": 0.005, "task.temperature": 0.7, "task.max_new_tokens": 50,
              "algo.trainable_layers": 8, "reward.eos_penalty": -20.0}
EXPECTED = {"imdb_paper": PAPER_IMDB, "imdb_seed_code": SEED_CODE_IMDB, "tldr_paper": PAPER_TLDR,
            "bound_ablation": PAPER_IMDB, "m_ablation": {**PAPER_IMDB, "objective.beta": 0.05}}
# Objective-specific values of the seed code (vbon_seed = vbon as --bon --bound exact ran it).
SEED_CODE_VBON = {"objective.bound": "exact", "objective.exact_scale": "seed"}


def header(name: str) -> str:
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    return "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))


def preset_grid(name: str, tmp_path: Path) -> tuple[dict, dict]:
    """(the sweep's axes, the composed hydra.sweeper.params) of `+experiment=name`."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={name}", f"paths.output_root={tmp_path}"],
                      return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    return sweep_grid([], params), params


def member(name: str, tmp_path: Path, **axes) -> "OmegaConf":
    return compose_config(tmp_path, [f"+experiment={name}", *(f"{k}={v}" for k, v in axes.items())])


def test_every_paper_figure_has_its_preset():
    assert {"imdb_paper", "imdb_seed_code", "tldr_paper", "m_ablation", "bound_ablation", "bon_sft_study",
            "imdb_tiny_pareto", "synthetic_pareto"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_header_names_its_figure_sources_size_and_cost(name):
    text = header(name)
    assert text.startswith("# @package _global_\n")
    assert re.search(r"Fig\. \d|figure", text), "the header names the paper figure it reproduces"
    assert "python -m vbon_exp -m +experiment=" + name in text
    assert re.search(r"^# members: \d+$", text, re.M), "the header declares its sweep size"
    assert f"# plan (`python -m vbon_exp +experiment={name} plan=true`" in text, "the header quotes its plan"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_declares_its_true_sweep_size(name, tmp_path):
    grid, _ = preset_grid(name, tmp_path)
    declared = int(re.search(r"^# members: (\d+)$", header(name), re.M).group(1))
    assert grid_members(grid) == declared
    assert grid_members(grid) == math.prod(len(v) for v in grid.values())


@pytest.mark.parametrize("whole_grid", [pytest.param(False, id="every-objective-and-beta"),
                                        pytest.param(True, id="whole-grid", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", PRESETS)
def test_every_objective_of_a_preset_composes_and_validates(name, tmp_path, monkeypatch, whole_grid):
    """Each objective of the sweep, at each β of its grid, validates (the memory pre-flight too: the presets are
    sized for their hardware, so it is skipped here as it would be on a machine this small). Fast tier: every
    objective and every β of the grid, in max(objectives, βs) compositions (conftest.covering_pairs); slow: every
    objective × β (synthetic_pareto's 70 members: a composition costs ~0.15 s)."""
    from conftest import covering_pairs

    monkeypatch.setenv("VBON_EXP_SKIP_MEMORY_CHECK", "1")
    grid, _ = preset_grid(name, tmp_path)
    objectives = grid.get("objective", [None])
    betas = grid.get("objective.beta", [None])
    members = [(o, b) for o in objectives for b in betas] if whole_grid else covering_pairs(objectives, betas)
    assert {o for o, _ in members} == set(objectives) and {b for _, b in members} == set(betas)
    for objective, beta in members:
        axes = {k: v[0] for k, v in grid.items() if k not in ("objective", "objective.beta")}
        if objective is not None:
            axes["objective"] = objective
        if beta is not None:
            axes["objective.beta"] = beta
        cfg = member(name, tmp_path, **axes)
        nodes = validate(cfg)
        if beta is not None:
            assert nodes.objective.beta == pytest.approx(float(beta))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_values_from_the_paper_and_the_seed_code(name, tmp_path):
    grid, _ = preset_grid(name, tmp_path)
    for objective in grid.get("objective", [None]):
        cfg = member(name, tmp_path, **({"objective": objective} if objective else {}))
        expected = dict(EXPECTED[name])
        if objective == "vbon_seed":
            expected.update(SEED_CODE_VBON)
        for key, value in expected.items():
            got = OmegaConf.select(cfg, key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            assert got == (pytest.approx(value) if isinstance(value, float) else value), f"{name}: {key}"


def test_seed_code_and_paper_take_one_optimizer_step_per_eight_episodes(tmp_path):
    """Both sources give 0.125 optimizer steps per episode (ppo_epochs × num_minibatches / batch_size), and the
    seed code's 1,600 optimizer steps are its total_episodes."""
    for name, steps in (("imdb_paper", None), ("imdb_seed_code", 1600)):
        algo = validate(member(name, tmp_path, objective="kl_rl")).algo
        assert algo.ppo_epochs * algo.num_minibatches / algo.batch_size == 0.125
        if steps is not None:
            assert algo.total_episodes // algo.batch_size * algo.ppo_epochs * algo.num_minibatches == steps


def test_the_paper_beta_is_on_the_imdb_grid(tmp_path):
    grid, _ = preset_grid("imdb_paper", tmp_path)
    assert "0.05" in grid["objective.beta"]
    assert set(grid["objective"]) == {"bon", "bon_sft", "vbon", "kl_rl", "dpo", "bonbon"}
    assert grid["seed"] == ["0", "1", "2"]
    for beta in grid["objective.beta"]:  # a whole N = 1/β + 1 for BoN, BoN-SFT and BoNBoN
        assert abs(1 / float(beta) - round(1 / float(beta))) < 1e-9


def test_m_ablation_keeps_one_evaluation_yardstick(tmp_path):
    grid, _ = preset_grid("m_ablation", tmp_path)
    for m in grid["reference.m"]:
        ref = validate(member("m_ablation", tmp_path, **{"reference.m": m})).reference
        assert ref.m == int(m) and ref.m_for("test") == 512


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_yields_to_the_users_launcher_and_runs_alone(name, tmp_path):
    """`+experiment=<preset> hydra/launcher=basic` composes (a preset's launcher settings would fail on another
    launcher's node), and without -m the preset is a single run that validates."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={name}", "hydra/launcher=basic",
                                           f"paths.output_root={tmp_path}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    validate(member(name, tmp_path))
