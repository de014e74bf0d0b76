"""Reliability under faults, through the CLI (`python -m vbon_exp`): the runs that are killed are real processes; the
runs that only read what a kill left (the reruns, the uninterrupted reference runs) and the bad inputs go through the
same entry point in this process (conftest.run_app: no interpreter start per run), with two bad inputs also run as
real processes (the interpreter's exit status and output).

1. SIGKILL during the reference-cache build and during training, at 5 seeded kill points each (1 in the fast tier,
   all 5 with `make test-all`: only the selected points' scenarios run): every rerun
   completes, recomputes no finished chunk (their files are untouched), resumes training from the last checkpoint,
   loses at most the one chunk or the updates since the last checkpoint that were in flight, and ends with exactly
   the results of an uninterrupted run with the same seed.
   The kill is triggered by an on-disk counter, never by a delay: the test polls the number of finished cache
   chunks (or the update of the newest checkpoint) and sends SIGKILL as soon as it reaches k. k is drawn (seeded)
   at least MARGIN units below the end of the phase, so the process cannot finish the phase before the counter
   reaches k, and a kill that nevertheless lands after the phase ended (or after the process exited) fails the
   test with a message saying so. The killed processes run two at a time (they share nothing but read-only
   artifacts), then their reruns one after the other, and each test checks its own scenario's record.
2. A table of bad inputs (configs and data files): each gets one clear message naming the key or file, a non-zero
   exit, and no traceback. (A truncated cache file is the exception by design: it is named and rebuilt.)"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_command, cli_env, run_app
from safetensors.torch import load_file
from tiny_artifacts import artifacts  # noqa: F401  (a fixture)

from vbon_exp.reference import read_chunk_rewards

ROOT = Path(__file__).resolve().parents[1]
ENV = cli_env(WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
POLL_S = 0.01  # between reads of the on-disk counter (the kill follows the read that reaches k at once)
KILL_POINTS = range(5)
FAST_POINTS = 1  # kill points in the fast tier; the others are marked slow
POINT_PARAMS = [pytest.param(p, marks=() if p < FAST_POINTS else pytest.mark.slow) for p in KILL_POINTS]
WORKERS = 2  # scenarios at a time (each is one single-threaded process at a time)


class Run:
    """`python -m vbon_exp *args` in a subprocess, its output in logs/<name>.stdout and .stderr: files, since a pipe
    nobody reads while the test polls the disk could fill up and stall the process before the kill point."""

    def __init__(self, *args: str, logs: Path, name: str):
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(cli_command(*args), cwd=ROOT, env=ENV, stdout=out,
                                         stderr=err, text=True)

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def result(self, timeout: float = 300) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # a hung run must not outlive the test
            self.proc.wait()
            raise
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, self.stdout_path.read_text(),
                                           self.stderr_path.read_text())


def run_cli(*args: str, logs: Path, name: str) -> subprocess.CompletedProcess:
    return Run(*args, logs=logs, name=name).result()


def run_here(*args: str, logs: Path, name: str) -> subprocess.CompletedProcess:
    """The same command line through the app in this process (conftest.run_app, ENV's settings), its output also
    kept in logs/<name>.stdout and .stderr."""
    done = run_app(*args, WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{name}.stdout").write_text(done.stdout)
    (logs / f"{name}.stderr").write_text(done.stderr)
    return done


def kill_at(run: Run, counter, k: int, what: str, timeout: float = 300) -> None:
    """SIGKILL the run as soon as `counter()` (an on-disk count of finished units) reaches k.

    Fails with a clear message when the process ends before that (it crashed, or k was not below the end of the
    phase), or when the kill found the process already exited."""
    proc, deadline = run.proc, time.monotonic() + timeout
    while counter() < k:
        if proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what} reached {k} (at "
                                 f"{counter()}): no kill happened\n{run.output()[-3000:]}")
        if time.monotonic() > deadline:  # a hung process: a bound on the test, not a trigger
            proc.kill()
            proc.wait()
            raise AssertionError(f"{what} did not reach {k} within {timeout} s\n{run.output()[-3000:]}")
        try:  # wait for the next poll of the counter, or for the process to end (then the loop reports it)
            proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
    proc.send_signal(signal.SIGKILL)  # (Popen sends nothing once the process has been reaped)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"the kill came too late: the process had already exited ({proc.returncode})\n"
                             f"{run.output()[-3000:]}")


def results_line(run_dir: Path) -> dict:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def _guarded(scenario, item):
    try:
        return scenario(item)
    except Exception as err:  # noqa: BLE001  (reported by the test of this item)
        return err


def in_parallel(kill, rerun, items) -> dict:
    """item → its record, or the exception it raised (re-raised by that item's test alone): kill(item) for every item,
    WORKERS at a time (real processes), then rerun(record) for each one in turn (in this process: the app is not
    thread-safe)."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        records = dict(zip(items, pool.map(lambda item: _guarded(kill, item), items)))
    return {item: record if isinstance(record, Exception) else _guarded(rerun, record)
            for item, record in records.items()}


def selected_points(request, test_name: str) -> list[int]:
    """The kill points of `test_name` this session runs (a scenario nobody checks is not run)."""
    return sorted({item.callspec.params["point"] for item in request.session.items
                   if getattr(item, "originalname", None) == test_name and hasattr(item, "callspec")})


def record_of(records: dict, item):
    record = records[item]
    if isinstance(record, Exception):
        raise record
    return record


DETERMINISTIC_KEYS = ("reward", "kl", "win_rate", "exact_reward", "exact_kl", "exact_kl_to_target")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """paths.cache_dir of every run here: the synthetic task's model artifacts (keyed by spec) are built once."""
    return tmp_path_factory.mktemp("shared-cache")


# --------------------------------------------------------------------------- kills during the cache build

# A small synthetic task (3-token responses: its exact oracle enumerates 6³ = 216 responses per prompt, not 6⁵),
# one prompt per chunk, M = 4096. BoN sampled at evaluation (estimate=sample): the test cache is the only cache.
CHUNKS = 12
CACHE_MARGIN = 5  # k ≤ CHUNKS − 5: ≥ 5 chunks (≥ 0.4 s on a 2-core machine) still to build when the kill is sent
CACHE_ARGS = ("objective=bon", "objective.estimate=sample", "task.response_length=3", f"task.num_prompts={CHUNKS}",
              "reference.chunk_prompts=1", "reference.m=4096", "eval.samples_per_prompt=16")


def cache_args(root: Path, shared: Path) -> tuple[str, ...]:
    """The cache under root/cache (its own), the model artifacts from the shared dir, the run dir root/run."""
    return (*CACHE_ARGS, f"paths.output_root={root}", f"paths.cache_dir={shared}", f"reference.cache_dir={root}/cache",
            f"hydra.run.dir={root}/run")


def finished_chunks(cache_root: Path) -> int:
    """Chunk files in place. A chunk's .npz is renamed into place last (after its checksum sidecar), so each one
    is a finished chunk."""
    return sum(1 for _ in cache_root.glob("reference/*/chunk-*.npz"))


def chunk_state(cache_root: Path) -> dict[str, int]:
    """Finished chunks (file with a matching checksum sidecar) → mtime."""
    import hashlib

    out = {}
    for chunk in cache_root.glob("reference/*/chunk-*.npz"):
        sidecar = chunk.with_suffix(".sha256")
        if sidecar.exists() and hashlib.sha256(chunk.read_bytes()).hexdigest() == sidecar.read_text().strip():
            out[chunk.name] = chunk.stat().st_mtime_ns
    return out


def debris(cache_root: Path) -> dict[str, int]:
    """Files in the cache that are not a finished chunk, its sidecar, meta.json or the build lock → size: what a
    kill left."""
    finished = set(chunk_state(cache_root))
    keep = finished | {Path(n).with_suffix(".sha256").name for n in finished} | {"meta.json", ".build.lock"}
    return {p.name: p.stat().st_size for p in cache_root.glob("reference/*/*") if p.name not in keep}


def cache_rewards(cache_root: Path) -> dict[str, np.ndarray]:
    return {p.name: read_chunk_rewards(p) for p in sorted(cache_root.glob("reference/*/chunk-*.npz"))}


# The seeded kill points: kill once this many chunks are finished (distinct points, all below the end).
CACHE_KILLS = random.Random(1000).sample(range(1, CHUNKS - CACHE_MARGIN + 1), len(KILL_POINTS))


@pytest.fixture(scope="module")
def uninterrupted_cache(tmp_path_factory, shared_cache):
    root = tmp_path_factory.mktemp("cache-ref")
    proc = run_here(*cache_args(root, shared_cache), logs=root / "logs", name="uninterrupted")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(chunk_state(root / "cache")) == CHUNKS
    return root


@pytest.fixture(scope="module")
def cache_kills(request, tmp_path_factory, shared_cache, uninterrupted_cache):
    """Each kill point: start the run, SIGKILL it once k chunks are finished, record the cache, rerun."""

    def kill(point):
        root = tmp_path_factory.mktemp(f"cache-kill-{point}")
        cache, args, logs = root / "cache", cache_args(root, shared_cache), root / "logs"
        k = CACHE_KILLS[point]
        kill_at(Run(*args, logs=logs, name="killed"), lambda: finished_chunks(cache), k,
                "the finished cache chunks")
        return {"root": root, "k": k, "finished": chunk_state(cache), "debris": debris(cache),
                "meta_after_kill": any(cache.glob("reference/*/meta.json"))}

    def rerun(record):
        root = record["root"]
        record["rerun"] = run_here(*cache_args(root, shared_cache), logs=root / "logs", name="rerun")
        record.update(after=chunk_state(root / "cache"), debris_after=debris(root / "cache"))
        return record

    return in_parallel(kill, rerun, selected_points(request, "test_kill_during_cache_build_then_rerun"))


@pytest.mark.parametrize("point", POINT_PARAMS)
def test_kill_during_cache_build_then_rerun(cache_kills, uninterrupted_cache, point):
    r = record_of(cache_kills, point)
    finished, k = r["finished"], r["k"]
    print(f"kill point {point}: k = {k}, {len(finished)} of {CHUNKS} chunks finished at the kill")
    # the kill landed mid-build: at or after the k-th chunk, before the last one and before meta.json
    assert k <= len(finished) < CHUNKS and not r["meta_after_kill"], (
        f"the kill landed after the cache build had ended ({len(finished)} of {CHUNKS} chunks)")
    assert sorted(finished) == [f"chunk-{c:05d}.npz" for c in range(len(finished))]
    # bytes lost: at most the one chunk in flight (its sidecar and a partial temp file), never more than that
    # chunk's own bytes; the rerun removes the killed writer's temp file and leaves nothing of its own behind
    reference_dir = next((uninterrupted_cache / "cache" / "reference").iterdir())
    in_flight = reference_dir / f"chunk-{len(finished):05d}.npz"
    assert len(r["debris"]) <= 2, r["debris"]
    assert all(name.lstrip(".").startswith(f"{in_flight.stem}.") for name in r["debris"]), r["debris"]
    assert sum(r["debris"].values()) <= in_flight.stat().st_size + in_flight.with_suffix(".sha256").stat().st_size
    assert not r["debris_after"], r["debris_after"]

    rerun = r["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = r["after"]
    assert len(after) == CHUNKS
    assert all(after[name] == mtime for name, mtime in finished.items()), "a finished chunk was recomputed"
    reference = cache_rewards(uninterrupted_cache / "cache")
    resumed = cache_rewards(r["root"] / "cache")
    assert reference.keys() == resumed.keys()
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)
    expected = results_line(uninterrupted_cache / "run")
    got = results_line(r["root"] / "run")
    for key in DETERMINISTIC_KEYS:
        assert got[key] == expected[key], key


def test_truncated_cache_chunk_is_named_and_rebuilt(tmp_path, shared_cache, uninterrupted_cache):
    """A finished cache (a copy of the uninterrupted one) with one chunk truncated: the rerun names that chunk,
    rebuilds it alone, bit for bit, and reports exactly the uninterrupted run's results."""
    shutil.copytree(uninterrupted_cache / "cache", tmp_path / "cache")  # copy2: mtimes kept
    (chunk,) = tmp_path.glob("cache/reference/*/chunk-00003.npz")
    original = read_chunk_rewards(chunk)
    chunk.write_bytes(chunk.read_bytes()[:50])
    untouched = {name: m for name, m in chunk_state(tmp_path / "cache").items() if name != chunk.name}
    assert len(untouched) == CHUNKS - 1
    second = run_here(*cache_args(tmp_path, shared_cache), logs=tmp_path / "logs", name="rerun")
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-2000:]
    assert f"{chunk.name} fails its checksum" in out or f"{chunk} fails its checksum" in out
    np.testing.assert_array_equal(read_chunk_rewards(chunk), original)
    after = chunk_state(tmp_path / "cache")
    assert len(after) == CHUNKS and all(after[name] == m for name, m in untouched.items())
    expected, got = results_line(uninterrupted_cache / "run"), results_line(tmp_path / "run")
    for key in DETERMINISTIC_KEYS:
        assert got[key] == expected[key], key


# --------------------------------------------------------------------------- kills during training

UPDATES = 80
CHECKPOINT_EVERY = 2
TRAIN_MARGIN = 40  # the kill update ≤ UPDATES − 40: ≥ 40 updates (≥ 0.4 s on a 2-core machine) still to go
TRAIN_ARGS = ("objective=vbon", "algo=rloo", "task.response_length=3", f"algo.total_episodes={64 * UPDATES}",
              f"train.checkpoint_every={CHECKPOINT_EVERY}", "eval.samples_per_prompt=32")
LAST = f"step-{UPDATES:08d}"


def train_args(root: Path, shared: Path) -> tuple[str, ...]:
    return (*TRAIN_ARGS, f"paths.output_root={root}", f"paths.cache_dir={shared}", f"hydra.run.dir={root}/run")


def checkpointed_update(run_dir: Path) -> int:
    """The update of the newest complete checkpoint (`latest` is replaced atomically once one is in place)."""
    try:
        return int((run_dir / "checkpoints" / "latest").read_text().strip().split("-")[1])
    except FileNotFoundError:
        return 0


# The seeded kill points: kill once the checkpoint at this update (or a later one) is in place.
TRAIN_KILLS = [CHECKPOINT_EVERY * c for c in random.Random(2000).sample(
    range(1, (UPDATES - TRAIN_MARGIN) // CHECKPOINT_EVERY + 1), len(KILL_POINTS))]


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory, shared_cache):
    """The uninterrupted run. It also builds the reference caches in the shared cache dir, so every later run
    finds them and the kills land in training, not in a cache build."""
    root = tmp_path_factory.mktemp("train-ref")
    proc = run_here(*train_args(root, shared_cache), logs=root / "logs", name="uninterrupted")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def training_kills(request, tmp_path_factory, shared_cache, training_runs):
    """Each kill point: start training, SIGKILL it once the checkpoint at update k is in place, rerun. Plus the
    corrupt-checkpoint scenario (a finished 4-update run whose newest checkpoint is then truncated, rerun)."""

    def kill(point):
        root = tmp_path_factory.mktemp(f"train-kill-{point}")
        run_dir, args, logs = root / "run", train_args(root, shared_cache), root / "logs"
        if point == "corrupt":  # no kill: a finished short run (in this process) whose newest checkpoint is cut
            first = run_here(*args, "train.max_updates=4", logs=logs, name="first")
            assert first.returncode == 0, first.stderr[-2000:]
            newest = run_dir / "checkpoints" / "step-00000004" / "policy.safetensors"
            newest.write_bytes(newest.read_bytes()[:-100])  # truncated
            return {"root": root}
        k = TRAIN_KILLS[point]
        kill_at(Run(*args, logs=logs, name="killed"), lambda: checkpointed_update(run_dir), k,
                "the checkpointed update")
        checkpoints = run_dir / "checkpoints"
        return {"root": root, "k": k, "killed_at": checkpointed_update(run_dir),
                "results_after_kill": (run_dir / "results.jsonl").exists(),
                "checkpoints": sorted(p.name for p in checkpoints.iterdir())}

    def rerun(record):
        root = record["root"]
        record["rerun"] = run_here(*train_args(root, shared_cache), logs=root / "logs", name="rerun")
        if "k" in record:
            record["checkpoints_after"] = sorted(p.name for p in (root / "run" / "checkpoints").iterdir())
        return record

    # the corrupt scenario's first run is in this process: it goes first, before the kills' threads start
    points = selected_points(request, "test_kill_during_training_then_resume")
    corrupt = _guarded(kill, "corrupt")
    records = in_parallel(kill, rerun, points)
    records["corrupt"] = corrupt if isinstance(corrupt, Exception) else _guarded(rerun, corrupt)
    return records


def _assert_final_policy_is_the_uninterrupted_one(run_dir: Path, training_runs: Path) -> None:
    expected = load_file(str(training_runs / "run" / "checkpoints" / LAST / "policy.safetensors"))
    got = load_file(str(run_dir / "checkpoints" / LAST / "policy.safetensors"))
    assert got.keys() == expected.keys()
    for name in expected:
        assert np.array_equal(got[name].numpy(), expected[name].numpy()), name


@pytest.mark.parametrize("point", POINT_PARAMS)
def test_kill_during_training_then_resume(training_kills, training_runs, point):
    r = record_of(training_kills, point)
    killed_at, run_dir = r["killed_at"], r["root"] / "run"
    print(f"kill point {point}: k = {r['k']}, the newest checkpoint at the kill is update {killed_at} of {UPDATES}")
    # the kill landed mid-training: at or after update k, before the last update and before any result
    assert r["k"] <= killed_at < UPDATES and not r["results_after_kill"], (
        f"the kill landed after training had ended (checkpoint {killed_at} of {UPDATES})")
    # what a kill leaves: the newest checkpoints (keep = 2; a third only while the oldest is being deleted) and
    # at most one half-assembled checkpoint or pointer temp file
    assert f"step-{killed_at:08d}" in r["checkpoints"] and "latest" in r["checkpoints"], r["checkpoints"]
    in_flight = [name for name in r["checkpoints"] if name.startswith(".")]
    assert len(in_flight) <= 1 and len([n for n in r["checkpoints"] if n.startswith("step-")]) <= 3, r["checkpoints"]

    rerun = r["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # continued from the newest checkpoint, not restarted: the work lost is the updates after it
    assert f"(update {killed_at} of {UPDATES})" in rerun.stdout + rerun.stderr
    assert not [n for n in r["checkpoints_after"] if n.startswith(".")]  # the half-written checkpoint is gone too
    _assert_final_policy_is_the_uninterrupted_one(run_dir, training_runs)
    reference_point, point_ = results_line(training_runs / "run"), results_line(run_dir)
    for key in DETERMINISTIC_KEYS:
        assert point_[key] == reference_point[key], key


def test_corrupt_checkpoint_is_named_and_skipped(training_kills, training_runs):
    r = record_of(training_kills, "corrupt")
    out = r["rerun"].stdout + r["rerun"].stderr
    assert r["rerun"].returncode == 0, out[-2000:]
    assert "step-00000004 is corrupt" in out and f"(update 2 of {UPDATES})" in out
    _assert_final_policy_is_the_uninterrupted_one(r["root"] / "run", training_runs)


# --------------------------------------------------------------------------- bad inputs


def _imdb(a, *extra):
    return ["task=imdb", f"model.name_or_path={a['policy']}", f"reward.name_or_path={a['classifier']}",
            f"task.data_dir={a['imdb']}", "task.num_train_prompts=4", "task.num_test_prompts=4", "reference.m=8",
            "eval.samples_per_prompt=2", "sampling.max_new_tokens=4", "objective=bon", "objective.n=2",
            "objective.estimate=sample", *extra]


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


# name → (the CLI arguments, given the tiny artifacts `a` and a scratch dir `tmp`; a fragment the one error message
# must contain, "{tmp}" standing for that dir). One table: the test is parametrized by its keys, so every row is run
# and checked.
# (n = 0, fractional n, m = 1, temperature 0, a string lr and an unknown task: tests/test_cli.py's table)
BAD_INPUTS = {
    "beta-negative": (lambda a, tmp: ["objective=kl_rl", "objective.beta=-0.5"], "objective.beta must be > 0"),
    "bound-unknown": (lambda a, tmp: ["objective.bound=l3"], "objective.bound must be one of"),
    "algo-unknown-key": (lambda a, tmp: ["+algo.lrr=1"], "unknown key algo.lrr"),
    "top-p-too-big": (lambda a, tmp: ["sampling.top_p=1.5"], "sampling.top_p must be ≤ 1"),
    "max-new-tokens-zero": (lambda a, tmp: ["sampling.max_new_tokens=0"], "sampling.max_new_tokens must be ≥ 1"),
    "resume-unknown": (lambda a, tmp: ["train.resume=maybe"], "train.resume must be auto, true or false"),
    "wandb-mode-unknown": (lambda a, tmp: ["wandb.mode=loud"], "wandb.mode must be"),
    "rloo-k-indivisible": (lambda a, tmp: ["algo=rloo", "algo.rloo_k=5"], "must be divisible by algo.rloo_k=5"),
    "seed-not-a-number": (lambda a, tmp: ["seed=abc"], "seed must be a number"),
    "top-k-on-synthetic": (lambda a, tmp: ["sampling.top_k=3"], "not supported on the synthetic task"),
    "data-dir-missing": (lambda a, tmp: _imdb(a, f"task.data_dir={tmp}/nowhere"),
                         "does not exist or is not a directory"),
    "data-empty": (lambda a, tmp: _imdb(a, f"task.data_dir={_data_dir(tmp, 'empty', '')}"), "is empty"),
    "data-malformed": (lambda a, tmp: _imdb(a, f"task.data_dir={_data_dir(tmp, 'bad', MALFORMED)}"),
                       "line 2: not valid JSON"),
    "data-wrong-type": (lambda a, tmp: _imdb(a, f"task.data_dir={_data_dir(tmp, 'int', WRONG_TYPE)}"),
                        "field 'text' is empty or not a string"),
    "data-missing-field": (lambda a, tmp: _imdb(a, f"task.data_dir={_data_dir(tmp, 'nofield', NO_FIELD)}"),
                           "missing field(s) ['text']"),
    "model-path-missing": (lambda a, tmp: _imdb(a, f"model.name_or_path={tmp}/no-model"), "{tmp}/no-model"),
    "reward-path-missing": (lambda a, tmp: _imdb(a, f"reward.name_or_path={tmp}/no-rm"), "{tmp}/no-rm"),
    "tiny-model-not-built": (lambda a, tmp: [*(x for x in _imdb(a) if not x.startswith("model.name_or_path")),
                                             "model=imdb_tiny", f"paths.output_root={tmp}/empty-root"],
                             "train_tiny_reference.py"),
    "reward-label-unknown": (lambda a, tmp: _imdb(a, "reward.label=HAPPY"), "reward.label='HAPPY' is not a class"),
    "prompt-exceeds-context": (lambda a, tmp: _imdb(a, "task.max_prefix_tokens=300"), "exceeds the model's context"),
    "nan-reward": (lambda a, tmp: _imdb(a, f"reward.name_or_path={_nan_classifier(a, tmp)}"), "returned nan"),
}
MALFORMED, WRONG_TYPE, NO_FIELD = '{"text": "ok", "label": 1}\n{oops\n', '{"text": 5, "label": 1}\n', '{"label": 1}\n'


# Also run as real processes (the interpreter's exit status and output): a value refused before the pipeline loads,
# and a data file refused by the pipeline.
IN_A_PROCESS = ("beta-negative", "data-malformed")


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, artifacts):  # noqa: F811
    """name → (the scratch dir its arguments name, the finished run through the app in this process, the finished
    run in a subprocess for the IN_A_PROCESS ones)."""
    tmp = tmp_path_factory.mktemp("bad")

    given = {name: BAD_INPUTS[name][0](artifacts, tmp) for name in BAD_INPUTS}  # (data files written once)

    def arguments(name, where):
        args, root = given[name], tmp / where / name
        return [*([] if any(a.startswith("paths.output_root") for a in args) else [f"paths.output_root={root}"]), *args]

    started = {name: Run(*arguments(name, "process"), logs=tmp / "process-logs", name=name) for name in IN_A_PROCESS}
    here = {name: run_here(*arguments(name, "out"), logs=tmp / "logs", name=name) for name in BAD_INPUTS}
    processes = {name: run.result() for name, run in started.items()}
    return {name: (tmp, here[name], processes.get(name)) for name in BAD_INPUTS}


def _check_bad_run(proc, name: str, tmp: Path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    assert BAD_INPUTS[name][1].replace("{tmp}", str(tmp)) in out, out[-2000:]
    assert "results:" not in proc.stdout  # nothing was reported as a result


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_gets_one_clear_message(bad_runs, name):
    tmp, proc, _ = bad_runs[name]
    _check_bad_run(proc, name, tmp)


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_in_a_real_process_gets_one_clear_message(bad_runs, name):
    tmp, _, proc = bad_runs[name]
    _check_bad_run(proc, name, tmp)
    assert proc.returncode == 2, proc.stderr[-2000:]  # a user error: `vbon_exp: error:`, exit status 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("vbon_exp: error:")], proc.stderr[-2000:]
