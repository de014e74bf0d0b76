"""Atomic file writes, the one helper every writer of caches, checkpoints and metadata uses: the bytes go to a
temporary file in the same directory, are fsynced, then renamed over the target, so a reader (or a run resumed
after a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
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
