"""vbon_exp/settings: torch-free settings, one name per implementation, and instant errors."""

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, cli_env

from vbon_exp import bon, kl, rewards, sampling, vllm_backend  # noqa: F401  (vllm_backend registers sampler=vllm)
from vbon_exp.objectives import OBJECTIVES
from vbon_exp.rewards import REWARDS
from vbon_exp.settings.algo import ALGO_NAMES
from vbon_exp.settings.eval import KL_ESTIMATOR_NAMES
from vbon_exp.settings.objective import OBJECTIVE_SETTINGS, REWARD_TRANSFORM_NAMES, TRANSFORMS_NEEDING_CDF
from vbon_exp.settings.reward import CLASSIFIER_OUTPUT_NAMES, REWARD_SETTINGS
from vbon_exp.settings.sampling import SAMPLER_NAMES
from vbon_exp.settings.task import TASK_SETTINGS
from vbon_exp.tasks import TASKS
from vbon_exp.trainers import ALGOS


@pytest.mark.parametrize("names, registry", [
    (SAMPLER_NAMES, sampling.SAMPLERS), (KL_ESTIMATOR_NAMES, kl.KL_ESTIMATORS), (ALGO_NAMES, ALGOS),
    (CLASSIFIER_OUTPUT_NAMES, rewards.CLASSIFIER_OUTPUTS), (REWARD_TRANSFORM_NAMES, bon.REWARD_TRANSFORMS),
    (TRANSFORMS_NEEDING_CDF, bon.TRANSFORMS_NEEDING_CDF), (OBJECTIVE_SETTINGS, OBJECTIVES), (TASK_SETTINGS, TASKS),
    (REWARD_SETTINGS, REWARDS),
], ids=["samplers", "kl", "algos", "classifier outputs", "transforms", "cdf transforms", "objectives", "tasks",
        "rewards"])
def test_the_settings_name_exactly_what_is_implemented(names, registry):
    """The settings hold the names a value check accepts (torch-free); the implementations register under the same
    names. A name on one side only would be a setting that fails late, or an implementation no config reaches."""
    assert sorted(names) == sorted(registry)


def test_implementations_use_the_settings_registered_for_their_name():
    for name, kind in TASKS.items():
        assert kind.config is TASK_SETTINGS[name]
    for name, kind in REWARDS.items():
        assert kind.config is REWARD_SETTINGS[name]
    for name, cls in OBJECTIVES.items():
        assert cls.config is OBJECTIVE_SETTINGS[name]


def _in_fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env=cli_env(), text=True,
                          capture_output=True, timeout=120)


def test_a_bad_key_exits_2_with_one_line_before_torch_loads():
    """`python -m vbon_exp objective.bnd=exact` answers from the settings alone: exit 2, one `vbon_exp: error:` line
    naming the key, and torch, transformers and pandas never imported (a fresh interpreter: this one has them)."""
    done = _in_fresh_python("""
        import runpy, sys
        sys.argv = ["vbon_exp", "objective.bnd=exact"]
        try:
            runpy.run_module("vbon_exp", run_name="__main__", alter_sys=True)  # python -m vbon_exp
        except SystemExit as exit:
            heavy = [m for m in ("torch", "transformers", "pandas") if m in sys.modules]
            print(f"exit={exit.code} heavy={heavy}")
    """)
    assert "exit=2 heavy=[]" in done.stdout, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("vbon_exp: error:")]
    assert len(errors) == 1 and "objective.bnd" in errors[0]


def test_validation_of_a_bad_value_needs_no_torch():
    """A value check (not only Hydra's key check) runs torch-free too: validate() on a composed config."""
    done = _in_fresh_python("""
        import sys
        from hydra import compose, initialize_config_dir
        from vbon_exp.config import validate
        from vbon_exp.errors import ConfigError
        from vbon_exp.launch import CONF_DIR
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["objective=bon", "objective.n=2.5"])
        try:
            validate(cfg)
        except ConfigError as err:
            print("error:", err)
        print("heavy:", [m for m in ("torch", "transformers", "pandas") if m in sys.modules])
    """)
    assert "error: objective.n must be an integer" in done.stdout, done.stdout + done.stderr
    assert "heavy: []" in done.stdout


def test_each_variant_is_declared_by_the_settings_and_lands_in_the_results_identity(make_config):
    """A method's variant (what makes it its own method beyond name, β and N) comes from its settings: the results
    line's identity carries it, and two settings that differ there never share a variant."""
    from vbon_exp.config import validate
    from vbon_exp.run import base_point

    def ident(*overrides):
        return base_point(validate(make_config(*overrides)))

    assert "variant" not in ident("objective=vbon") and "variant" not in ident("objective=kl_rl")
    assert ident("objective=kl_rl", "objective.transform=cdf")["variant"] == "cdf"
    assert ident("objective=kl_rl", "objective.transform=exp_cdf", "objective.t=2")["variant"] == "exp_cdf t=2"
    assert ident("objective=bon", "objective.estimate=sample")["variant"] == "drawn"
    assert "variant" not in ident("objective=bon")
    assert ident("objective=soft_bon", "objective.lam=0.5")["variant"] == "λ=0.5"
    assert ident("objective=rejection_bon", "objective.quantile=0.8")["variant"] == "τ=q0.8"
    assert ident("objective=regularised_bon", "objective.lam=0.1")["variant"] == "λ=0.1"


def test_adapter_dropout_is_refused_by_the_rl_trainers_only(make_config):
    from vbon_exp.config import validate
    from vbon_exp.errors import ConfigError

    lora = ("train.lora.rank=4", "train.lora.dropout=0.1")
    with pytest.raises(ConfigError, match="train.lora.dropout=0.1 with objective=vbon"):
        validate(make_config("objective=vbon", *lora))
    for objective in ("bon_sft", "dpo"):  # the offline loops apply it (tests/test_trainers.py)
        assert validate(make_config(f"objective={objective}", *lora)).train.lora.dropout == 0.1
