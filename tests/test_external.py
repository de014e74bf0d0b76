"""vbon_exp/objectives/external.py: a policy trained anywhere evaluated with this project's caches and columns — a
policy trained here and evaluated again through `objective=external` gives the same results line (same seed) to 1e-6
and the same samples; a policy whose tokenizer is not the task's is refused with one line, before any cache."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import SHORT_RESPONSES, run_point
from tiny_artifacts import artifacts  # noqa: F401  (a fixture)

from vbon_exp.errors import ConfigError
from vbon_exp.results import SAMPLES_FILE

SHORT = ("train.max_updates=3", "eval.samples_per_prompt=16", "train.checkpoint_every=0", SHORT_RESPONSES)
# the metrics that describe the policy: the evaluation of the same weights at the same seed must give each of them
METRICS = ("reward", "reward_se", "kl", "kl_se", "kl_full", "kl_k1", "kl_k3", "win_rate", "win_rate_se",
           "win_rate_first", "response_length", "eval_samples", "exact_reward", "exact_kl", "exact_win_rate",
           "exact_regret", "exact_win_rate_regret")


def test_a_policy_trained_here_evaluated_as_external_gives_the_same_line(tmp_path):
    trained = run_point(tmp_path, tmp_path / "trained", "objective=vbon", "objective.beta=0.3333333333333333",
                        *SHORT)
    external = run_point(tmp_path, tmp_path / "external", "objective=external",
                         f"objective.policy={tmp_path / 'trained' / 'policy'}", "eval.samples_per_prompt=16",
                         SHORT_RESPONSES)
    assert trained["exact_kl"] > 0.01  # the policy moved: the comparison can fail
    for key in METRICS:
        assert external[key] == pytest.approx(trained[key], abs=1e-6), key
    assert external["objective"] == "external" and external["policy"] == str(tmp_path / "trained" / "policy")
    assert external["objective_label"] == "policy" and "exact_kl_to_target" not in external
    a, b = (pd.read_parquet(tmp_path / name / SAMPLES_FILE) for name in ("trained", "external"))
    pd.testing.assert_frame_equal(a.drop(columns="objective"), b.drop(columns="objective"))


def test_a_policy_with_another_tokenizer_is_refused_before_any_cache(tmp_path, artifacts):  # noqa: F811
    with pytest.raises(ConfigError, match=r"objective\.policy=.* does not use the task's tokenizer: its vocabulary"):
        run_point(tmp_path, tmp_path / "run", "objective=external", f"objective.policy={artifacts['policy']}",
                  "objective.label=tiny")
    assert not (tmp_path / "cache" / "reference").exists()


def test_external_needs_a_policy(make_config):
    from vbon_exp.config import validate

    with pytest.raises(ConfigError, match="objective.policy"):
        validate(make_config("objective=external"))
