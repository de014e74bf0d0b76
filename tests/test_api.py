"""vbon_exp/api.py: the notebook API runs a configuration from overrides and reads it back with the analysis the CLI
uses — results lines, samples, the frontier tables and the gap to BoN."""

from __future__ import annotations

import pytest
from conftest import shift_seed_overrides

from vbon_exp import api
from vbon_exp.errors import ConfigError


def test_run_a_configuration_and_read_it_back(tmp_path):
    common = [f"paths.output_root={tmp_path}", "wandb.mode=disabled", "device=cpu", "reference.m=32",
              "eval.bon_pool_m=32", "eval.samples_per_prompt=8", "task.response_length=3"]
    bon = api.run_config(*shift_seed_overrides([*common, "objective=bon", "objective.n=all"]),
                         run_dir=tmp_path / "sweep" / "0")
    vbon = api.run_config(*shift_seed_overrides([*common, "objective=vbon", "objective.beta=0.5",
                                                 "train.max_updates=2"]), run_dir=tmp_path / "sweep" / "1")
    assert bon["n"] == 1 and vbon["objective"] == "vbon"
    assert (tmp_path / "sweep" / "1" / ".hydra" / "config.yaml").is_file()
    points = api.load_results(tmp_path / "sweep")
    assert sorted(points["objective"].unique()) == ["bon", "vbon"] and len(points) == 1 + 4  # BoN: N = 1, 2, 4, 8
    tables = api.frontier_tables(points)
    assert {"seed_means", "frontier", "frontier_frequency", "bon_gap"} <= set(tables)
    gap = api.bon_gap(points)
    assert list(gap["objective"]) == ["vbon"] and gap["reward_gap"].notna().all()
    samples = api.load_samples([tmp_path / "sweep" / "1"])
    assert len(samples) == 4 * 8 and (samples["objective"] == "vbon").all()


def test_composing_a_preset_and_a_bad_override(tmp_path):
    cfg = api.compose("+experiment=synthetic_pareto", f"paths.output_root={tmp_path}")
    assert cfg.wandb.group == "synthetic_pareto"
    with pytest.raises(ConfigError, match="objective.beta"):
        api.run_config(f"paths.output_root={tmp_path}", "objective.beta=-1", run_dir=tmp_path / "bad")
