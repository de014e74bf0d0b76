"""`python -m vbon_exp` end to end and `vbon_exp.config.validate` on composed configs.

A subprocess costs seconds (an interpreter, torch, transformers), so the runs here are in process (conftest.run_app:
the same entry point, vbon_exp/__main__.py run as __main__ with its argv, output captured) except what only a real
process shows: a short run of the default config (its environment and output pipe), and two bad inputs (a value
and a composition error) whose interpreter exits with status 2 and one error line. The full default run (100
updates, 5-token responses) is marked slow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_command, cli_env, run_app, shifted
from tiny_artifacts import artifacts  # noqa: F401  (a fixture)

from vbon_exp.config import ConfigError, validate

FAKE_KEY = "vbonfakekey0123456789abcdef0123456789abcd"
RESULT_KEYS = {
    "task", "objective", "beta", "n", "temperature", "seed", "reward", "kl", "win_rate", "wall_s",
    "exact_reward", "exact_kl", "exact_kl_to_target",
}
# The default config, shortened where its size is not what is checked: 3-token responses (an exact oracle over
# 6³ = 216 responses, not 6⁵), 5 updates, 64 evaluation samples per prompt.
SHORT_DEFAULT = ("task.response_length=3", "train.max_updates=5", "eval.samples_per_prompt=64")


def _start(output_root: Path, *args: str, **env) -> subprocess.Popen:
    return subprocess.Popen(cli_command(f"paths.output_root={output_root}", *args), cwd=REPO_ROOT, env=cli_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(output_root: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return _finish(_start(output_root, *args, **env))


# --------------------------------------------------------------------------- the default run


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-default")
    # a fake API key in the environment: the run stays offline (WANDB_MODE) and must not write the key anywhere
    proc = _run(root, *SHORT_DEFAULT, WANDB_API_KEY=FAKE_KEY)
    return root, proc


def test_default_run_succeeds_and_prints_results(default_run):
    root, proc = default_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    # its output is a pipe, not a terminal: progress is whole lines (none for a run this short), no redraws
    assert "\r" not in proc.stdout + proc.stderr


def check_default_results_line(root: Path, proc: subprocess.CompletedProcess) -> None:
    files = list((root / "runs").rglob("results.jsonl"))
    assert len(files) == 1, files
    lines = files[0].read_text().splitlines()
    assert len(lines) == 1
    point = json.loads(lines[0])
    assert RESULT_KEYS <= set(point), RESULT_KEYS - set(point)
    # (the default objective is whatever conf/config.yaml names; N and β always describe the same point)
    assert point["task"] == "synthetic" and point["status"] == "ok" and isinstance(point["objective"], str)
    assert point["n"] == pytest.approx(1 / point["beta"] + 1, rel=1e-9)
    assert point["seed"] == shifted(0) and point["temperature"] == 1.0
    assert point["threads"] == 1  # threads=auto takes $OMP_NUM_THREADS, which the suite sets (conftest.cli_env)
    assert point["exact_kl"] >= 0 and point["exact_kl_to_target"] >= 0
    assert 0 < point["win_rate"] < 1 and point["wall_s"] > 0
    assert str(files[0].parent) in proc.stdout  # the printed path is the results file's run dir


def test_default_run_writes_a_complete_results_line(default_run):
    check_default_results_line(*default_run)


@pytest.mark.slow  # the default config as it is: 100 updates on 5-token responses (~30 s)
def test_the_unshortened_default_run_succeeds(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results:" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    check_default_results_line(tmp_path, proc)


def test_default_run_writes_an_offline_wandb_run(default_run):
    root, _ = default_run
    run_dirs = [p.parent for p in (root / "runs").rglob("results.jsonl")]
    offline = list(run_dirs[0].glob("wandb/offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb")), offline


def test_default_run_never_writes_the_api_key(default_run):
    root, _ = default_run
    leaked = [p for p in root.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked, leaked


def test_help_and_cfg_job(tmp_path):
    helped = run_app(f"paths.output_root={tmp_path}", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "objective" in helped.stdout and "task" in helped.stdout
    cfg = run_app(f"paths.output_root={tmp_path}", "--cfg", "job")
    assert cfg.returncode == 0, cfg.stderr
    assert "objective:" in cfg.stdout and "sampling:" in cfg.stdout and f"seed: {shifted(0)}" in cfg.stdout
    assert not (tmp_path / "cache").exists()  # printing the config runs nothing


# --------------------------------------------------------------------------- bad inputs


BAD_INPUTS = {
    # id: (overrides, the key (or words) the message must name)
    "n=0": (["objective=bon", "objective.n=0"], ["objective.n must be ≥ 1"]),
    "m=1": (["reference.m=1"], ["reference.m must be ≥ 2"]),
    "temperature=0": (["sampling.temperature=0"], ["sampling.temperature must be > 0"]),
    "temperature=-1": (["sampling.temperature=-1"], ["sampling.temperature"]),
    "n=2.5": (["objective=bon", "objective.n=2.5"], ["objective.n must be an integer"]),
    "beta=-1,n=4": (["objective.beta=-1", "objective.n=4"], ["objective.beta"]),
    "task=nope": (["task=nope"], ["synthetic"]),
    "objective=nope": (["objective=nope"], ["bon"]),
    # typos and wrong types: Hydra's composition error (no `+`), or the schema merge in validate (with `+`), both
    # exit 2 with the key named on the one error line
    "objective.bnd=exact": (["objective.bnd=exact"], ["objective.bnd"]),
    "+task.temprature=0.5": (["+task.temprature=0.5"], ["task.temprature"]),
    "eval.sample_per_prompt=4": (["eval.sample_per_prompt=4"], ["eval.sample_per_prompt"]),
    "algo.lr=fast": (["algo.lr=fast"], ["(full_key: algo.lr)"]),
    # the memory pre-flight: stops at once instead of running until the kernel kills it
    "m=1e9": (["reference.m=1000000000"], ["reference.m", "GiB"]),
    # an evaluation judge is a conf/reward/<name>.yaml, composed inside the app: a wrong name is one error
    "judges=nope": (["task=imdb", "eval.judges=[nope]"], ["eval.judges", "vader"]),
    "temperatures=0": (["eval.temperatures=[0.5,0]"], ["eval.temperatures"]),
}
# Also run as real processes: a value refused by validate and a command line Hydra cannot compose (launch.py turns
# Hydra's exit status 1 into 2): the interpreter's own exit status and stderr.
IN_A_PROCESS = ("n=0", "objective.bnd=exact")


def _out_root(root: Path, name: str) -> Path:
    return root / name.replace("=", "_").replace(",", "_")


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Every bad input through the app in process; the IN_A_PROCESS ones in subprocesses too, started together."""
    root = tmp_path_factory.mktemp("cli-bad")
    procs = {name: _start(_out_root(root / "process", name), *BAD_INPUTS[name][0]) for name in IN_A_PROCESS}
    results = {name: run_app(f"paths.output_root={_out_root(root, name)}", *ov) for name, (ov, _) in BAD_INPUTS.items()}
    return root, results, {name: _finish(p) for name, p in procs.items()}


def _check_bad_run(proc, out_root: Path, name: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    for word in BAD_INPUTS[name][1]:
        assert word in output, output
    assert not (out_root / "cache").exists()  # failed before building the task or any reference cache
    assert not list(out_root.rglob("results.jsonl"))
    if not name.endswith("nope"):
        # exactly one error line, from vbon_exp, naming the key
        errors = [line for line in proc.stderr.splitlines() if line.startswith("vbon_exp: error:")]
        assert len(errors) == 1, proc.stderr
        assert BAD_INPUTS[name][1][0] in errors[0]


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_fails_early_with_one_clear_message(bad_runs, name):
    root, results, _ = bad_runs
    _check_bad_run(results[name], _out_root(root, name), name)


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_in_a_real_process_exits_2_with_one_line(bad_runs, name):
    root, _, processes = bad_runs
    _check_bad_run(processes[name], _out_root(root / "process", name), name)


def test_bad_option_lists_the_available_options(bad_runs):
    _, results, _ = bad_runs
    assert "Available options" in results["task=nope"].stderr + results["task=nope"].stdout
    assert "Available options" in results["objective=nope"].stderr + results["objective=nope"].stdout


# --------------------------------------------------------------------------- validate() directly


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["objective.n=0"], "objective.n"),
        (["objective=bon", "objective.n=0"], "objective.n"),
        (["reference.m=1"], "reference.m"),
        (["sampling.temperature=0"], "sampling.temperature"),
        (["sampling.temperature=-1"], "sampling.temperature"),
        (["sampling.top_p=0"], "sampling.top_p"),
        (["sampling.top_p=1.5"], "sampling.top_p"),
        (["sampling.top_k=-1"], "sampling.top_k"),
        (["objective.n=2.5"], "objective.n"),
        (["objective=bon", "objective.n=2.5"], "objective.n"),  # BoN needs a whole N
        (["objective.beta=-1", "objective.n=4"], "objective.beta"),
        (["objective=bon", "objective.beta=-1", "objective.n=4"], "objective.beta"),
        (["objective=bon", "objective.beta=0.5", "objective.n=4"], "objective.beta"),  # disagree: 1/β + 1 = 3
        (["objective=vbon", "objective.beta=0"], "objective.beta"),
        (["seed=1.5"], "seed"),
        (["sampling.max_new_tokens=4"], "sampling.max_new_tokens"),  # the synthetic task's responses are 5 long
        (["eval.samples_per_prompt=0"], "eval.samples_per_prompt"),
        (["wandb.mode=sometimes"], "wandb.mode"),
        (["+sampling.temprature=0.5"], "sampling.temprature"),
        (["+objective.bnd=exact"], "objective.bnd"),
        (["eval.kl_estimator=k9"], "eval.kl_estimator"),
        (["objective=bon", "objective.n=all", "objective.estimate=sample"], "objective.estimate"),  # one pool, all N
        (["objective=bon", "objective.estimate=exact"], "objective.estimate"),
        (["objective=bon", "objective.n=sixteen"], "objective.n"),
        (["objective=bon", "objective.n=512"], "eval.bon_pool_m"),  # N > M_eval = 256: the pool cannot give it
        (["eval.bootstrap=-1"], "eval.bootstrap"),
        (["eval.bon_pool_m=1"], "eval.bon_pool_m"),
        (["task.reward_levels=1"], "task.reward_levels"),
    ],
)
def test_validate_names_the_bad_key(make_config, overrides, key):
    cfg = make_config(*overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize(
    "overrides",
    [[], ["objective=bon"], ["objective=bon", "objective.n=1"], ["objective=bon", "objective.n=16"],
     ["objective=bon", "objective.beta=0.25"], ["objective=vbon", "objective.beta=0.25"],
     ["sampling.temperature=0.7"], ["wandb.mode=disabled"], ["reference.m=2"],
     ["objective=bon", "objective.n=all"], ["objective=bon", "objective.n=512", "objective.estimate=sample"],
     ["task.reward_levels=4"],
     # a sweep's judges score the sampled members; BoN from the pool (rewards only) gets no judge columns
     ["task=imdb", "objective=bon", "eval.judges=[vader]"]],
    ids=["default", "bon", "bon-n1", "bon-n16", "bon-beta", "vbon-beta", "t07", "wandb-disabled", "m2", "bon-all",
         "bon-sample-512", "reward-levels", "bon-pool-with-judges"],
)
def test_validate_accepts_good_configs(make_config, overrides):
    validate(make_config(*overrides))


@pytest.mark.parametrize("override", ["sampling.temperature=abc", "algo.lr=fast", "reference.m=2.5", "objective.bnd=exact",
                                      "eval.sample_per_prompt=4", "train.resume=maybe_not_bool_or_str"])
def test_typos_and_wrong_types_stop_at_composition_naming_the_key(make_config, override):
    """Typed nodes (the schemas in the defaults lists): Hydra refuses these before any run, naming the key."""
    from hydra.errors import ConfigCompositionException

    key = override.split("=")[0]
    try:
        make_config(override)
    except ConfigCompositionException as err:
        assert key in str(err) + str(err.__cause__)
    else:  # a string is a valid `str | bool`: then the value check names it
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(make_config(override))


def test_composed_config_ties_beta_to_n(make_config):
    """N = 1/β + 1 whichever of the two an objective takes (the resolvers registered by vbon_exp.config)."""
    cfg = make_config("objective=bon", "objective.n=5")
    assert cfg.objective.beta == pytest.approx(0.25)
    assert make_config("objective=bon").objective.beta == pytest.approx(1 / 3)
    assert make_config("objective=vbon", "objective.beta=0.25").objective.n == pytest.approx(5)


# --------------------------------------------------------------------------- evaluation judges inside the app


def test_judges_by_name_and_evaluation_temperatures_in_the_cli(tmp_path, artifacts):  # noqa: F811
    """`python -m vbon_exp eval.judges=[vader] eval.temperatures=[0.5,1.0]` (tiny IMDB models; the app in process):
    inside Hydra's app the judge is composed through the app's own config search path; the run writes one line per
    evaluation temperature, each with the judge's columns, in the Hydra run dir."""
    from test_tasks import FAST, task_overrides

    proc = run_app(f"paths.output_root={tmp_path}", *task_overrides("imdb", artifacts), "objective=bon",
                   "objective.n=2", "objective.estimate=sample", "eval.judges=[vader]", "eval.temperatures=[0.5,1.0]",
                   *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = (tmp_path / "runs").rglob("results.jsonl")
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [p["eval_temperature"] for p in lines] == [0.5, 1.0]
    for p in lines:
        assert p["temperature"] == 0.7 and -1.0 <= p["judge/vader/reward"] <= 1.0
        assert 0.0 <= p["judge/vader/win_rate"] <= 1.0
    assert proc.stdout.count("judges: vader: reward") == 2
