"""vbon_exp/run.py: the pipeline's own pieces (the end-to-end runs are in test_cli, test_objectives, test_tasks)."""

import torch
from conftest import build_task_from_config

from vbon_exp.config import validate
from vbon_exp.run import base_point, reference_caches


def test_train_and_test_caches_never_share_samples(make_config):
    """The split is part of the cache key: on the synthetic task (train prompts = test prompts) the two splits get
    two caches drawn with different seeds, so a policy is never evaluated against the samples it trained on."""
    cfg = make_config("reference.m=16", "device=cpu")
    nodes = validate(cfg)
    task = build_task_from_config(cfg)
    caches = reference_caches(cfg, nodes, task, nodes.sampling, ["train", "test"])
    assert caches["train"].path != caches["test"].path
    assert task.train_prompts == task.test_prompts
    assert not torch.equal(caches["train"].sorted_rewards, caches["test"].sorted_rewards)
    again = reference_caches(cfg, nodes, task, nodes.sampling, ["test"])["test"]  # keyed by content: reused as it is
    assert again.path == caches["test"].path and torch.equal(again.sorted_rewards, caches["test"].sorted_rewards)


def test_results_line_says_which_reward_output_was_trained_on(make_config):
    assert base_point(make_config("task=imdb"))["reward_output"] == "prob"
    assert base_point(make_config("task=imdb", "reward.output=logit"))["reward_output"] == "logit"
    assert base_point(make_config())["reward_output"] is None  # the synthetic task's reward is a table


def test_test_m_sizes_the_test_cache_only(make_config):
    """reference.test_m keeps one evaluation yardstick while an M ablation varies the training F̂ (reference.m)."""
    cfg = make_config("reference.m=8", "reference.test_m=24", "device=cpu")
    nodes = validate(cfg)
    task = build_task_from_config(cfg)
    caches = reference_caches(cfg, nodes, task, nodes.sampling, ["train", "test"])
    assert caches["train"].m == 8 and caches["test"].m == 24
    assert base_point(cfg)["test_m"] == 24 and base_point(make_config())["test_m"] is None
