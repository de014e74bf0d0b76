"""Two processes on the CPU (gloo) through `accelerate launch`: training completes and both replicas end with
identical parameters (the trainer gathers a checksum from every process and raises on a mismatch)."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, cli_env, free_port, shift_seed_overrides


def test_two_process_run_keeps_replicas_identical(tmp_path):
    # task.response_length=3: a small synthetic task (its exact oracle, built by both processes, enumerates 216
    # responses per prompt instead of 7776); the exact KL after 4 updates is 0.52 there, far above the bar below
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "vbon_exp", *shift_seed_overrides(["device=cpu", "train.max_updates=4", f"paths.output_root={tmp_path}",
                                                 "eval.samples_per_prompt=8", "wandb.mode=disabled",
                                                 "task.response_length=3"]),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=cli_env(WANDB_MODE="disabled"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for f in tmp_path.glob("runs/**/results.jsonl") for line in f.read_text().splitlines()]
    assert len(lines) == 1, "exactly one results line: only the main process writes"
    point = lines[0]
    assert point["num_processes"] == 2
    checksums = point["param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    # training moved the parameters: the checksum differs from the untouched reference's
    assert point["exact_kl"] > 0.01
