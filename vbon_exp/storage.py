"""Atomic file writes, the one helper every writer of caches, checkpoints and metadata uses: the bytes go to a
temporary file in the same directory, are fsynced, then renamed over the target, so a reader (or a run resumed
after a crash) sees the old file or the new one, never half of one. And the build lock of a cache directory, so
processes that need one cache at once build it once (`build_lock`)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as the bytes of a compressed npz file."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def write_checked_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The arrays as a compressed npz, with its SHA-256 in a `.sha256` sidecar; both written atomically, the
    sidecar first, so a file without a matching checksum (an interrupted write) is treated as missing."""
    data = npz_bytes(arrays)
    atomic_write_bytes(Path(path).with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
    atomic_write_bytes(Path(path), data)


def read_checked_npz(path: Path, what: str) -> dict[str, np.ndarray] | None:
    """The arrays of a file written by `write_checked_npz`, or None when it is missing, partial or fails its
    checksum (logged, naming `what` and the file: the caller rebuilds it). Never unpickles."""
    path = Path(path)
    sidecar = path.with_suffix(".sha256")
    if not path.exists() or not sidecar.exists():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sidecar.read_text().strip():
        log.warning("%s %s fails its checksum: rebuilding it", what, path)
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------- one builder per cache


LOCK_NAME = ".build.lock"


@contextmanager
def build_lock(directory: Path, what: str):
    """Hold the build lock of the cache in `directory` — an exclusive lock on its file `.build.lock` — while building
    or reading the cache, so that processes needing it at once (sweep members, the processes of one
    run) build it once: the first builds, the others wait here, then find it complete and reuse it. The OS releases
    the lock when its holder ends, however it ends (SIGKILL included), so a killed builder leaves it to the next
    process, which resumes the build where it stopped. The holder removes the temporary files a killed writer left
    in the directory (every writer holds this lock, so none of them is being written)."""
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_NAME
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            log.info("%s: waiting for process %s, which is building it in %s", what, holder, directory)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        remove_stale_temp_files(directory)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete the temporary files of atomic writes (`.<name>.<random>.tmp`) in `directory` that a killed writer left
    behind; call it only while no one can be writing there. Returns what was removed (logged)."""
    stale = sorted(Path(directory).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted write in %s", len(stale), directory)
    return stale
