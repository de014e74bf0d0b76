"""The real tasks (vbon_exp/tasks/imdb.py, tldr.py) end to end with tiny models and data the tests write, through
the same from_pretrained / JSON-lines code paths as the hub ids; plus the real local IMDB/TL;DR data where present."""

import json
import os

import pytest
import torch
from conftest import build_task_from_config, compose_config
from tiny_artifacts import SHARED_IMDB, SHARED_TLDR, artifacts  # noqa: F401  (artifacts: a fixture)

import vbon_exp.config  # noqa: F401  (resolvers)
from vbon_exp.modeling import ModelLoadError
from vbon_exp.run import run
from vbon_exp.tasks.data import DataError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id fails at once instead of retrying


FAST = ["reference.m=16", "eval.samples_per_prompt=4", "algo.total_episodes=16", "algo.batch_size=8",
        "algo.num_minibatches=2", "algo.rloo_k=2", "sampling.max_new_tokens=6",
        "wandb.mode=disabled", "device=cpu"]


def task_overrides(task: str, a: dict) -> list[str]:
    if task == "imdb":
        return ["task=imdb", f"model.name_or_path={a['policy']}", f"reward.name_or_path={a['classifier']}",
                f"task.data_dir={a['imdb']}", "task.num_train_prompts=8", "task.num_test_prompts=4"]
    return ["task=tldr", f"model.name_or_path={a['policy']}", f"reward.name_or_path={a['rm']}",
            f"task.data_dir={a['tldr']}", "task.num_train_prompts=8", "task.num_test_prompts=4",
            "reward.max_length=256", "task.max_prompt_tokens=64"]


def compose_cfg(tmp_path, overrides):
    return compose_config(tmp_path, overrides)


def objective_overrides(task: str, objective: str) -> list[str]:
    n_first = ("bon", "bon_sft", "bonbon", "bond", "bond_iterative")
    extra = ["objective.n=2"] if objective in n_first else ["objective.beta=0.5"]
    extra += ["sft.batch_size=4"] if objective == "bon_sft" else []
    extra += ["objective.forward_samples_per_prompt=2"] if objective == "bond" else []
    extra += ["objective.ref_kl=0.1"] if objective == "bond_iterative" else []
    if objective in ("dpo", "bonbon"):  # pairs of the n = 1/β + 1 = 3 (dpo) or 2 (bonbon) samples per train prompt
        extra += ["preference.batch_size=4"]
        if task == "tldr":  # the untrained tiny policy rarely ends with EOS in 6 tokens: with the −20 penalty every
            extra += ["reward.eos_penalty=null"]  # sample of a prompt would tie and make no pair
    return extra


@pytest.mark.parametrize("task", ["imdb", "tldr"])
@pytest.mark.parametrize("objective", ["bon", "vbon", "kl_rl", "bon_sft", "dpo", "bonbon", "bond", "bond_iterative"])
def test_task_runs_end_to_end(tmp_path, artifacts, task, objective):
    extra = objective_overrides(task, objective)
    cfg = compose_cfg(tmp_path, [*task_overrides(task, artifacts), f"objective={objective}", *extra, *FAST])
    point = run(cfg, run_dir=tmp_path / "run")
    assert point["status"] == "ok" and point["task"] == task
    for key in ("reward", "kl", "win_rate"):
        assert torch.isfinite(torch.tensor(point[key])), key
    assert 0.0 <= point["win_rate"] <= 1.0
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["objective"] == objective


def test_imdb_prompts_are_review_prefixes(tmp_path, artifacts):
    build_task = build_task_from_config

    cfg = compose_cfg(tmp_path, [*task_overrides("imdb", artifacts), *FAST])
    task = build_task(cfg)
    assert len(task.train_prompts) == 8 and len(task.test_prompts) == 4
    assert all(2 <= len(p) <= 8 for p in task.train_prompts + task.test_prompts)
    texts = [task.tokenizer.decode(p) for p in task.train_prompts]
    assert not any("<br" in t for t in texts)
    # the reward is p(POSITIVE | text) (the paper's r), the class found by name
    assert task.reward.index == 1 and task.reward.output == "prob"
    from vbon_exp.modeling import Samples

    ids = torch.tensor([task.test_prompts[0]])
    samples = Samples(torch.zeros(1, dtype=torch.long), ids, torch.ones_like(ids), ids, torch.ones_like(ids))
    assert 0.0 < float(task.reward(samples)[0]) < 1.0


def test_tldr_eos_penalty_and_prompt_format(tmp_path, artifacts):
    build_task = build_task_from_config

    from vbon_exp.modeling import Samples

    cfg = compose_cfg(tmp_path, [*task_overrides("tldr", artifacts), *FAST])
    task = build_task(cfg)
    assert all(task.tokenizer.decode(p).endswith("TL;DR:") for p in task.test_prompts)
    prompt = torch.tensor([task.test_prompts[0]])
    eos = task.tokenizer.eos_token_id
    with_eos = torch.tensor([[5, 6, eos]])
    without = torch.tensor([[5, 6, 7]])
    ones = torch.ones_like(with_eos)
    s = Samples(torch.zeros(2, dtype=torch.long), prompt.repeat(2, 1), torch.ones_like(prompt.repeat(2, 1)),
                torch.cat([with_eos, without]), torch.cat([ones, ones]))
    r = task.reward(s)
    assert r[1] == -20.0 and r[0] != -20.0


def test_missing_local_model_names_path_and_script(tmp_path, artifacts):
    cfg = compose_cfg(tmp_path, ["task=imdb", "model=imdb_tiny", "reward=imdb_tiny", f"task.data_dir={artifacts['imdb']}",
                                 *FAST])
    with pytest.raises(ModelLoadError, match="train_tiny_reference.py"):
        run(cfg, run_dir=tmp_path / "run")


def test_unreachable_hub_id_names_the_id_and_the_key(tmp_path, artifacts):
    cfg = compose_cfg(tmp_path, ["task=imdb", "model.name_or_path=no-such-org/no-such-model",
                                 f"task.data_dir={artifacts['imdb']}", *FAST])
    with pytest.raises(ModelLoadError, match=r"no-such-org/no-such-model.*model\.name_or_path"):
        run(cfg, run_dir=tmp_path / "run")


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('{"text": "fine", "label": 1}\nnot json\n', "line 2: not valid JSON"),
    ('{"label": 1}\n', "line 1: missing field"),
    ('["a list"]\n', "line 1: expected a JSON object"),
    ('{"text": "  ", "label": 0}\n', "line 1: field 'text' is empty"),
])
def test_malformed_data_names_file_and_line(tmp_path, artifacts, content, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(content)
    (data / "test.jsonl").write_text(content)
    cfg = compose_cfg(tmp_path, [*task_overrides("imdb", artifacts), f"task.data_dir={data}", *FAST])
    with pytest.raises(DataError, match=message) as err:
        run(cfg, run_dir=tmp_path / "run")
    assert "train.jsonl" in str(err.value) or "is empty" in str(err.value)


@pytest.mark.skipif(not SHARED_IMDB.exists(), reason=f"shared IMDB data not found at {SHARED_IMDB}")
def test_real_imdb_reviews_make_prompts(tmp_path, artifacts):
    build_task = build_task_from_config

    cfg = compose_cfg(tmp_path, [*task_overrides("imdb", artifacts), f"task.data_dir={SHARED_IMDB}",
                                 "task.num_train_prompts=200", "task.num_test_prompts=50", *FAST])
    task = build_task(cfg)
    assert len(task.train_prompts) == 200 and len(set(map(tuple, task.train_prompts))) > 150


@pytest.mark.skipif(not SHARED_IMDB.exists(), reason=f"shared IMDB data not found at {SHARED_IMDB}")
@pytest.mark.parametrize("objective", ["dpo", "bonbon"])
def test_preference_objectives_on_the_real_imdb_reviews(tmp_path, artifacts, objective):
    """DPO and BoNBoN end to end on prompts from the real local IMDB reviews (tiny untrained models)."""
    cfg = compose_cfg(tmp_path, [*task_overrides("imdb", artifacts), f"task.data_dir={SHARED_IMDB}",
                                 f"objective={objective}", *objective_overrides("imdb", objective), *FAST])
    point = run(cfg, run_dir=tmp_path / "run")
    assert point["status"] == "ok" and point["pairs"] == 8 and point["pair_n"] == (3 if objective == "dpo" else 2)
    assert all(torch.isfinite(torch.tensor(point[k])) for k in ("reward", "kl", "win_rate"))


@pytest.mark.skipif(not SHARED_TLDR.exists(), reason=f"shared TL;DR data not found at {SHARED_TLDR}")
def test_real_tldr_file_splits_into_disjoint_prompts(tmp_path, artifacts):
    build_task = build_task_from_config

    cfg = compose_cfg(tmp_path, [*task_overrides("tldr", artifacts), f"task.data_dir={SHARED_TLDR}",
                                 "task.num_train_prompts=null", "task.num_test_prompts=100", *FAST])
    task = build_task(cfg)
    assert len(task.test_prompts) == 100 and len(task.train_prompts) == 400
    assert not set(map(tuple, task.test_prompts)) & set(map(tuple, task.train_prompts))


def test_4bit_loading_needs_a_gpu(tmp_path, artifacts):  # noqa: F811
    from vbon_exp.config import ConfigError

    cfg = compose_cfg(tmp_path, [*task_overrides("imdb", artifacts), "model.load_in_4bit=true", *FAST])
    with pytest.raises(ConfigError, match=r"model\.load_in_4bit=true needs a CUDA GPU"):
        run(cfg, run_dir=tmp_path / "run")
