"""Atomic, resumable training checkpoints: weights as safetensors, optimizer/scheduler/step as a weights-only
torch file.

`<run_dir>/checkpoints/step-XXXXXXXX/` is assembled in a temp dir and renamed into place; `latest` (a one-line file,
itself replaced atomically) names the newest complete checkpoint, so a crash mid-save leaves the previous one
valid."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

log = logging.getLogger(__name__)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(root: Path, step: int, modules: dict[str, torch.nn.Module], state: dict, keep: int = 2) -> Path:
    """Write modules (safetensors; tied weights handled) and `state` (tensors and plain Python only)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-step-"))
    try:
        for name, module in modules.items():
            save_model(module, str(tmp / f"{name}.safetensors"))
        torch.save(state, tmp / "trainer_state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_text(root / "latest", final.name)
    older = sorted(p for p in root.glob("step-*") if p != final)
    for old in older[: max(0, len(older) - (keep - 1))]:  # keep the newest `keep` checkpoints
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "trainer_state.pt").exists() else None


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module]) -> dict:
    for name, module in modules.items():
        missing, unexpected = load_model(module, str(path / f"{name}.safetensors"), strict=False)
        if unexpected:
            raise RuntimeError(f"checkpoint {path}/{name}.safetensors has unexpected tensors {unexpected[:5]}")
    # weights_only: a checkpoint is data, never code
    return torch.load(path / "trainer_state.pt", weights_only=True, map_location="cpu")
