"""vbon_exp/storage.py: atomic writes and the build lock of a cache directory. Processes that need one cache at once
build it once (the others wait and reuse it, reading the same bytes); a builder killed while holding the lock leaves it
to the next process; the temporary files of an interrupted write are removed by the next holder. No timing: the
processes meet at pipe barriers (each blocks on a read until the other side writes: no polling, no sleeping), and
what is asserted holds whichever process wins the lock."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_env, shifted

from vbon_exp.storage import atomic_write_bytes, build_lock, remove_stale_temp_files

# A child process: build (or reuse) one reference cache of the synthetic task once the parent says go (after both
# children have said they are ready), and print how many chunks it built and the SHA-256 of what it read.
BUILD_CHILD = r"""
import hashlib, json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import build_synthetic
from vbon_exp.reference import build_reference_cache
from vbon_exp.sampling import SamplingConfig

artifacts, cache_dir = Path({artifacts!r}), {cache_dir!r}
task = build_synthetic(artifacts)
print("ready", flush=True)
sys.stdin.readline()  # blocks until the parent's go: both children are loaded, the builds start together
cache = build_reference_cache(
    reference=task.reference, reward=task.reward, tokenizer=task.tokenizer, prompts=task.test_prompts, m=2048,
    sampling=SamplingConfig(temperature=1.0, max_new_tokens=5), seed={seed}, cache_dir=cache_dir,
    key_parts={{"reference": task.fingerprint["reference"], "reward": task.fingerprint["reward"], "prompts": "t"}},
    eos_id=task.eos_id, pad_id=task.pad_id, chunk_prompts=1)
digest = hashlib.sha256(cache.sorted_rewards.numpy().tobytes() + cache.first_rewards.numpy().tobytes()).hexdigest()
print(json.dumps({{"built": cache.built_chunks, "sha256": digest, "chunks": len(task.test_prompts)}}))
"""


def test_two_processes_started_together_build_one_cache_and_read_the_same_bytes(synthetic_task, artifacts_dir,
                                                                               tmp_path):
    child_code = BUILD_CHILD.format(tests=str(REPO_ROOT / "tests"), artifacts=str(artifacts_dir),
                                    cache_dir=str(tmp_path / "cache"), seed=shifted(0))
    children = [subprocess.Popen([sys.executable, "-c", child_code], cwd=REPO_ROOT, env=cli_env(),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    ready = [c.stdout.readline().strip() for c in children]  # blocks until each is loaded (or has died: "")
    for child in children:
        if child.poll() is None:
            child.stdin.write("go\n")
            child.stdin.flush()
    outputs = [c.communicate(timeout=300) for c in children]
    assert ready == ["ready", "ready"], [err[-3000:] for _, err in outputs]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    chunks = reports[0]["chunks"]
    assert sorted(r["built"] for r in reports) == [0, chunks], reports  # one built every chunk, the other none
    assert reports[0]["sha256"] == reports[1]["sha256"]
    waited = [err for _, err in outputs if "waiting for process" in err]
    assert len(waited) <= 1  # the one that reused it may have waited for the builder (if it came while it built)


# A child process: take the build lock of a directory, say so, then wait to be killed while holding it.
HOLD_CHILD = r"""
import sys, time
from vbon_exp.storage import build_lock
with build_lock({directory!r}, "test cache"):
    print("locked", flush=True)
    sys.stdin.read()  # until the parent closes stdin (or kills this process)
"""


def _holder(directory: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD_CHILD.format(directory=str(directory))], cwd=REPO_ROOT,
                             env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_builder_killed_while_holding_the_lock_leaves_it_to_the_next(tmp_path):
    import fcntl

    directory = tmp_path / "cache" / "key"
    child = _holder(directory)
    lock_file = directory / ".build.lock"
    with open(lock_file) as handle:  # held: a second lock is refused
        with pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    child.kill()  # SIGKILL: no clean-up code runs
    child.wait()
    with open(lock_file) as handle:  # the OS released it with the process
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    with build_lock(directory, "test cache"):
        assert lock_file.read_text().strip() != str(child.pid)  # the new holder's pid


def test_a_process_waits_for_the_holder_and_says_for_whom(tmp_path, caplog):
    directory = tmp_path / "cache" / "key"
    child = _holder(directory)
    acquired = threading.Event()

    def take() -> None:
        with build_lock(directory, "test cache"):
            acquired.set()

    said, messages = threading.Event(), []  # set by the storage logger's "waiting for process" line (no polling)

    class Listener(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
            if "waiting for process" in record.getMessage():
                said.set()

    listener = Listener()
    logging.getLogger("vbon_exp.storage").addHandler(listener)
    try:
        with caplog.at_level(logging.INFO, logger="vbon_exp.storage"):
            thread = threading.Thread(target=take)
            thread.start()
            assert said.wait(timeout=120), "no waiting log line"
            assert not acquired.is_set() and any(f"waiting for process {child.pid}" in m for m in messages)
            child.stdin.close()  # the holder finishes: the waiter gets the lock
            child.wait(timeout=60)
            thread.join(timeout=60)
    finally:
        logging.getLogger("vbon_exp.storage").removeHandler(listener)
    assert acquired.is_set()


def test_the_next_holder_removes_temporary_files_of_interrupted_writes(tmp_path):
    directory = tmp_path / "key"
    directory.mkdir()
    atomic_write_bytes(directory / "chunk-00000.npz", b"complete")
    stale = [directory / ".chunk-00001.npz.k2j3h4.tmp", directory / ".meta.json.x8y9.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    with build_lock(directory, "test cache"):
        assert not any(p.exists() for p in stale)
    assert (directory / "chunk-00000.npz").read_bytes() == b"complete"
    assert remove_stale_temp_files(directory) == []  # nothing left
