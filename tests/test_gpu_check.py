"""vbon_exp/bench/gpu_check.py (`make gpu-check`): one line and exit 2 without CUDA; its pipeline at toy size on
the CPU (the IMDB-shaped bf16 + checkpointing + LoRA training and its evaluation, ending in the table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli_env

from vbon_exp.bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_make_gpu_check_exits_2_with_one_line_without_cuda():
    venv = [f"VENV={sys.prefix}"] if sys.prefix != sys.base_prefix else []  # this suite's environment
    done = subprocess.run(["make", "-s", "gpu-check", *venv], capture_output=True, text=True, cwd=ROOT,
                          env=cli_env(), timeout=600)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("gpu-check:")]
    assert len(lines) == 1 and "no CUDA device" in lines[0]


def test_the_toy_pipeline_runs_on_the_cpu_and_writes_the_table(tmp_path, capsys):
    code = gpu_check.main(["--allow-cpu", "--toy", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    run = report["runs"]["IMDB-shaped vBoN (bf16, ckpt, LoRA)"]
    assert run["status"] == "ok" and run["task"] == "imdb" and run["objective"] == "vbon"
    assert (tmp_path / "run-native" / "policy" / "adapter" / "adapter_config.json").is_file()
    assert "IMDB-shaped vBoN" in capsys.readouterr().out
