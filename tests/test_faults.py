"""Reliability under faults, through the real CLI (subprocesses).

1. SIGKILL at seeded random points during the reference-cache build and during training: every rerun completes,
   recomputes no finished chunk (their files are untouched), resumes training from the last checkpoint, and ends
   with exactly the results of an uninterrupted run with the same seed. Where a kill lands depends on timing, but
   the assertions hold wherever it lands; each kill is also checked to have landed mid-phase, so the test cannot
   pass by killing a finished process.
2. A table of bad inputs (configs and data files): each gets one clear message naming the key or file, a non-zero
   exit, and no traceback. (A truncated cache file is the exception by design: it is named and rebuilt.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from tiny_artifacts import artifacts, write_imdb_dir  # noqa: F401  (artifacts: a fixture)
from vbon_exp.reference import read_chunk_rewards

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "HYDRA_FULL_ERROR": "0"}
ENV.pop("WANDB_API_KEY", None)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vbon_exp", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return finish(start(*args))


def wait_for(predicate, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before the awaited state: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def results_line(run_dir: Path) -> dict:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


DETERMINISTIC_KEYS = ("reward", "kl", "win_rate", "exact_reward", "exact_kl", "exact_kl_to_target")


# --------------------------------------------------------------------------- kills during the cache build

CACHE_ARGS = ("objective=bon", "task.num_prompts=24", "reference.chunk_prompts=1", "reference.m=4096",
              "eval.samples_per_prompt=16")


def chunk_state(cache_root: Path) -> dict[str, int]:
    """Finished chunks (file with a matching checksum sidecar) → mtime."""
    import hashlib

    out = {}
    for chunk in cache_root.glob("reference/*/chunk-*.npz"):
        sidecar = chunk.with_suffix(".sha256")
        if sidecar.exists() and hashlib.sha256(chunk.read_bytes()).hexdigest() == sidecar.read_text().strip():
            out[chunk.name] = chunk.stat().st_mtime_ns
    return out


def cache_rewards(cache_root: Path) -> dict[str, np.ndarray]:
    return {p.name: read_chunk_rewards(p) for p in sorted(cache_root.glob("reference/*/chunk-*.npz"))}


@pytest.fixture(scope="module")
def uninterrupted_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-ref")
    proc = run_cli(*CACHE_ARGS, f"paths.output_root={root}", f"hydra.run.dir={root}/run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.parametrize("point", range(5))
def test_kill_during_cache_build_then_rerun(tmp_path, uninterrupted_cache, point):
    rng = random.Random(1000 + point)
    delay = rng.uniform(0.0, 1.5)  # seconds after the first chunk lands
    cache = tmp_path / "cache"
    args = (*CACHE_ARGS, f"paths.output_root={tmp_path}", f"hydra.run.dir={tmp_path}/run")
    proc = start(*args)
    wait_for(lambda: any(cache.glob("reference/*/chunk-*.npz")), proc=proc)
    time.sleep(delay)
    assert not any(cache.glob("reference/*/meta.json")), "the kill must land before the cache is complete"
    kill(proc)

    finished = chunk_state(cache)
    assert 0 < len(finished) < 24
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = chunk_state(cache)
    assert len(after) == 24
    assert all(after[name] == mtime for name, mtime in finished.items()), "a finished chunk was recomputed"
    reference = cache_rewards(uninterrupted_cache / "cache")
    resumed = cache_rewards(cache)
    assert reference.keys() == resumed.keys()
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)
    expected = results_line(uninterrupted_cache / "run")
    got = results_line(tmp_path / "run")
    for key in DETERMINISTIC_KEYS:
        assert got[key] == expected[key], key


# --------------------------------------------------------------------------- kills during training

UPDATES = 80
TRAIN_ARGS = ("objective=vbon", "algo=rloo", f"algo.total_episodes={64 * UPDATES}", "train.checkpoint_every=2",
              "eval.samples_per_prompt=32")
LAST = f"step-{UPDATES:08d}"


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory):
    """The uninterrupted run, and a cache dir shared by every run (so kills land in training, not the build)."""
    root = tmp_path_factory.mktemp("train-ref")
    proc = run_cli(*TRAIN_ARGS, f"paths.output_root={root}", f"hydra.run.dir={root}/run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.parametrize("point", range(5))
def test_kill_during_training_then_resume(tmp_path, training_runs, point):
    rng = random.Random(2000 + point)
    delay = rng.uniform(0.0, 1.0)  # seconds after the first checkpoint lands
    run_dir = tmp_path / "run"
    args = (*TRAIN_ARGS, f"paths.output_root={tmp_path}", f"paths.cache_dir={training_runs}/cache",
            f"hydra.run.dir={run_dir}")
    proc = start(*args)
    wait_for(lambda: (run_dir / "checkpoints" / "latest").exists(), proc=proc)
    time.sleep(delay)
    assert not (run_dir / "results.jsonl").exists(), "the kill must land before training ends"
    kill(proc)
    killed_at = (run_dir / "checkpoints" / "latest").read_text().strip()

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed_from = int(killed_at.split("-")[1])
    assert f"(update {resumed_from} of {UPDATES})" in rerun.stdout + rerun.stderr  # continued, not restarted
    expected = load_file(str(training_runs / "run" / "checkpoints" / LAST / "policy.safetensors"))
    got = load_file(str(run_dir / "checkpoints" / LAST / "policy.safetensors"))
    for name in expected:
        assert np.array_equal(got[name].numpy(), expected[name].numpy()), name
    reference_point, point_ = results_line(training_runs / "run"), results_line(run_dir)
    for key in DETERMINISTIC_KEYS:
        assert point_[key] == reference_point[key], key


def test_corrupt_checkpoint_is_named_and_skipped(tmp_path, training_runs):
    run_dir = tmp_path / "run"
    args = (*TRAIN_ARGS, f"paths.output_root={tmp_path}", f"paths.cache_dir={training_runs}/cache",
            f"hydra.run.dir={run_dir}")
    first = run_cli(*args, "train.max_updates=4")
    assert first.returncode == 0, first.stderr[-2000:]
    newest = run_dir / "checkpoints" / "step-00000004" / "policy.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated
    rerun = run_cli(*args)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-2000:]
    assert "step-00000004 is corrupt" in out and f"(update 2 of {UPDATES})" in out
    got = load_file(str(run_dir / "checkpoints" / LAST / "policy.safetensors"))
    expected = load_file(str(training_runs / "run" / "checkpoints" / LAST / "policy.safetensors"))
    assert all(np.array_equal(got[k].numpy(), expected[k].numpy()) for k in expected)


# --------------------------------------------------------------------------- bad inputs


def _imdb(a, *extra):
    return ["task=imdb", f"model.name_or_path={a['policy']}", f"reward.name_or_path={a['classifier']}",
            f"task.data_dir={a['imdb']}", "task.num_train_prompts=4", "task.num_test_prompts=4", "reference.m=8",
            "eval.samples_per_prompt=2", "sampling.max_new_tokens=4", "objective=bon", "objective.n=2", *extra]


def _data_dir(tmp: Path, name: str, content: str) -> Path:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (d / f"{split}.jsonl").write_text(content)
    return d


def _nan_classifier(a, tmp: Path) -> Path:
    """A reward model whose weights were corrupted into NaN."""
    import shutil

    import torch
    from safetensors.torch import save_file

    d = tmp / "nan-rm"
    if not d.exists():
        shutil.copytree(a["classifier"], d)
        weights = load_file(str(d / "model.safetensors"))
        weights = {k: (torch.full_like(v, float("nan")) if "score" in k else v) for k, v in weights.items()}
        save_file(weights, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


BAD_NAMES = (
    "n-zero", "n-fractional", "m-one", "temperature-zero", "beta-negative", "bound-unknown", "lr-wrong-type",
    "algo-unknown-key", "top-p-too-big", "max-new-tokens-zero", "resume-unknown", "wandb-mode-unknown",
    "rloo-k-indivisible", "seed-not-a-number", "top-k-on-synthetic", "unknown-task", "data-dir-missing",
    "data-empty", "data-malformed", "data-wrong-type", "data-missing-field", "model-path-missing",
    "reward-path-missing", "tiny-model-not-built", "reward-label-unknown", "prompt-exceeds-context", "nan-reward",
)


def bad_inputs(a, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name → (CLI arguments, a fragment the one error message must contain)."""
    malformed = _data_dir(tmp, "bad", '{"text": "ok", "label": 1}\n{oops\n')
    wrong_type = _data_dir(tmp, "int", '{"text": 5, "label": 1}\n')
    no_field = _data_dir(tmp, "nofield", '{"label": 1}\n')
    return {
        "n-zero": (["objective=bon", "objective.n=0"], "objective.n must be ≥ 1"),
        "n-fractional": (["objective=bon", "objective.n=2.5"], "objective.n must be an integer"),
        "m-one": (["reference.m=1"], "reference.m must be ≥ 2"),
        "temperature-zero": (["sampling.temperature=0"], "sampling.temperature must be > 0"),
        "beta-negative": (["objective=kl_rl", "objective.beta=-0.5"], "objective.beta must be > 0"),
        "bound-unknown": (["objective.bound=l3"], "objective.bound must be one of"),
        "lr-wrong-type": (["algo.lr=fast"], "(full_key: algo.lr)"),
        "algo-unknown-key": (["+algo.lrr=1"], "unknown key algo.lrr"),
        "top-p-too-big": (["sampling.top_p=1.5"], "sampling.top_p must be ≤ 1"),
        "max-new-tokens-zero": (["sampling.max_new_tokens=0"], "sampling.max_new_tokens must be ≥ 1"),
        "resume-unknown": (["train.resume=maybe"], "train.resume must be auto, true or false"),
        "wandb-mode-unknown": (["wandb.mode=loud"], "wandb.mode must be"),
        "rloo-k-indivisible": (["algo=rloo", "algo.rloo_k=5"], "must be divisible by algo.rloo_k=5"),
        "seed-not-a-number": (["seed=abc"], "seed must be a number"),
        "top-k-on-synthetic": (["sampling.top_k=3"], "not supported on the synthetic task"),
        "unknown-task": (["task=nope"], "synthetic"),
        "data-dir-missing": (_imdb(a, f"task.data_dir={tmp}/nowhere"), "does not exist or is not a directory"),
        "data-empty": (_imdb(a, f"task.data_dir={_data_dir(tmp, 'empty', '')}"), "is empty"),
        "data-malformed": (_imdb(a, f"task.data_dir={malformed}"), "line 2: not valid JSON"),
        "data-wrong-type": (_imdb(a, f"task.data_dir={wrong_type}"), "field 'text' is empty or not a string"),
        "data-missing-field": (_imdb(a, f"task.data_dir={no_field}"), "missing field(s) ['text']"),
        "model-path-missing": (_imdb(a, f"model.name_or_path={tmp}/no-model"), f"{tmp}/no-model"),
        "reward-path-missing": (_imdb(a, f"reward.name_or_path={tmp}/no-rm"), f"{tmp}/no-rm"),
        "tiny-model-not-built": ([*(x for x in _imdb(a) if not x.startswith("model.name_or_path")), "model=imdb_tiny",
                                  f"paths.output_root={tmp}/empty-root"], "train_tiny_reference.py"),
        "reward-label-unknown": (_imdb(a, "reward.label=HAPPY"), "reward.label='HAPPY' is not a class"),
        "prompt-exceeds-context": (_imdb(a, "task.max_prefix_tokens=300"), "exceeds the model's context"),
        "nan-reward": (_imdb(a, f"reward.name_or_path={_nan_classifier(a, tmp)}"), "returned nan"),
    }


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, artifacts):  # noqa: F811
    tmp = tmp_path_factory.mktemp("bad")
    table = bad_inputs(artifacts, tmp)

    def one(item):
        name, (args, _) = item
        root = tmp / "out" / name
        extra = [] if any(a.startswith("paths.output_root") for a in args) else [f"paths.output_root={root}"]
        return name, run_cli(*extra, *args)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return table, dict(pool.map(one, table.items()))


def test_the_table_holds_at_least_twenty_bad_inputs(bad_runs):
    table, _ = bad_runs
    assert set(table) == set(BAD_NAMES) and len(table) >= 20


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_input_gets_one_clear_message(bad_runs, name):
    table, runs = bad_runs
    proc = runs[name]
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    assert table[name][1] in out, out[-2000:]
    assert "results:" not in proc.stdout  # nothing was reported as a result


def test_truncated_cache_chunk_is_named_and_rebuilt(tmp_path):
    args = ("objective=bon", "eval.samples_per_prompt=8", f"paths.output_root={tmp_path}")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    (chunk,) = tmp_path.glob("cache/reference/*/chunk-00000.npz")
    original = read_chunk_rewards(chunk)
    chunk.write_bytes(chunk.read_bytes()[:50])
    second = run_cli(*args)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-2000:]
    assert f"{chunk.name} fails its checksum" in out or f"{chunk} fails its checksum" in out
    np.testing.assert_array_equal(read_chunk_rewards(chunk), original)
