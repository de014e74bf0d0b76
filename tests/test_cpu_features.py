"""vbon_exp/cpu_features.py and the bf16 check of trainers/shared.py: bf16 on a CPU without bf16 instructions stops
before any model loads, with one line naming the key and the slowdown, unless the user insists; the plan scales its
hours by the slowdown. VBON_EXP_CPU_BF16 stands in for the CPU, so these hold on any machine."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import compose_cfg

from vbon_exp.cpu_features import EMULATED_BF16_SLOWDOWN, cpu_bf16_native, cpu_description
from vbon_exp.errors import ConfigError
from vbon_exp.trainers.shared import TrainConfig

CPU = torch.device("cpu")


@pytest.mark.parametrize("forced, native", [("0", False), ("1", True)])
def test_the_override_decides(monkeypatch, forced, native):
    monkeypatch.setenv("VBON_EXP_CPU_BF16", forced)
    assert cpu_bf16_native() is native
    assert cpu_description().endswith("no bf16 instructions" if not native else "bf16 instructions")


def test_bf16_autocast_on_a_cpu_without_bf16_stops_naming_the_key_and_the_way_on(monkeypatch):
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "0")
    with pytest.raises(ConfigError) as err:
        TrainConfig(mixed_precision="bf16").check_device(CPU)
    text = str(err.value)
    assert "train.mixed_precision=bf16" in text and "train.allow_slow_bf16=true" in text
    assert f"{EMULATED_BF16_SLOWDOWN:.0f}× slower" in text


def test_a_bf16_frozen_model_is_named_too(monkeypatch):
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "0")
    with pytest.raises(ConfigError, match=r"model\.dtype=bfloat16"):
        TrainConfig().check_device(CPU, frozen_dtypes={"model.dtype": "bfloat16", "reward.dtype": None})


def test_insisting_goes_on_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "0")
    with caplog.at_level(logging.WARNING, logger="vbon_exp.trainers.shared"):
        TrainConfig(mixed_precision="bf16", allow_slow_bf16=True).check_device(CPU)
    assert "going on because train.allow_slow_bf16=true" in caplog.text


def test_float32_and_native_bf16_pass_silently(monkeypatch, caplog):
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "0")
    TrainConfig().check_device(CPU, frozen_dtypes={"model.dtype": "float32"})
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "1")
    with caplog.at_level(logging.WARNING):
        TrainConfig(mixed_precision="bf16").check_device(CPU)
    assert "bf16" not in caplog.text


def test_a_run_stops_before_building_anything(monkeypatch, tmp_path):
    """The whole run: the error comes before the task (no cache, no run files but the log)."""
    from vbon_exp.run import run

    monkeypatch.setenv("VBON_EXP_CPU_BF16", "0")
    cfg = compose_cfg(tmp_path / "out", "train.mixed_precision=bf16")
    with pytest.raises(ConfigError, match="allow_slow_bf16"):
        run(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "out" / "cache").exists()
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_the_plan_scales_its_hours_by_the_slowdown(monkeypatch, tmp_path):
    from vbon_exp.config import validate
    from vbon_exp.plan.report import emulated_bf16_slowdown

    nodes = validate(compose_cfg(tmp_path, "train.mixed_precision=bf16"))
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "0")
    assert emulated_bf16_slowdown(nodes, "cpu") == EMULATED_BF16_SLOWDOWN
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "1")
    assert emulated_bf16_slowdown(nodes, "cpu") == 1.0
    plain = validate(compose_cfg(tmp_path))
    monkeypatch.setenv("VBON_EXP_CPU_BF16", "0")
    assert emulated_bf16_slowdown(plain, "cpu") == 1.0
