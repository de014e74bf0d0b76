"""Atomic, resumable training checkpoints: weights as safetensors, optimizer/scheduler/step as a weights-only
torch file, and a `checksums.json` (SHA-256 of each file).

`<run_dir>/checkpoints/step-XXXXXXXX/` is assembled in a temp dir and renamed into place; `latest` (a one-line file,
itself replaced atomically) names the newest complete checkpoint, so a crash mid-save leaves the previous one
valid. A checkpoint whose files do not match their checksums is reported by name and skipped for the previous one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from vbon_exp.storage import atomic_write_text, remove_stale_temp_files

log = logging.getLogger(__name__)


def save_checkpoint(root: Path, step: int, modules: dict[str, torch.nn.Module], state: dict, keep: int = 2,
                    trainable_only: bool = False) -> Path:
    """Write modules (safetensors; tied weights handled) and `state` (tensors and plain Python only). With
    `trainable_only` (LoRA: the frozen base is the model the run loaded, not state), only the policy's parameters
    that train."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-step-"))
    try:
        for name, module in modules.items():
            if trainable_only and name == "policy":
                save_file(trainable_state(module), str(tmp / f"{name}.safetensors"), metadata={"trainable_only": "1"})
            else:
                save_model(module, str(tmp / f"{name}.safetensors"))
        torch.save(state, tmp / "trainer_state.pt")
        sums = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / "checksums.json").write_text(json.dumps(sums, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", final.name)
    older = sorted(p for p in root.glob("step-*") if p != final)
    for old in older[: max(0, len(older) - (keep - 1))]:  # keep the newest `keep` checkpoints
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial_checkpoints(root: Path) -> list[Path]:
    """Delete what a killed save left under `root`: half-assembled checkpoints (`.tmp-step-*`) and the temp file of
    the `latest` pointer. The run that owns the directory calls it before training, when no other process writes
    there. Returns what was removed (logged)."""
    partial = sorted(Path(root).glob(".tmp-step-*")) if Path(root).exists() else []
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    if partial:
        log.info("removed %d partial checkpoint(s) left by an interrupted save in %s", len(partial), root)
    return partial + (remove_stale_temp_files(root) if Path(root).exists() else [])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checkpoint(path: Path) -> str | None:
    """None when every file matches checksums.json, else what is wrong."""
    sums_path = path / "checksums.json"
    if not sums_path.exists():
        return "checksums.json is missing"
    try:
        sums = json.loads(sums_path.read_text())
    except json.JSONDecodeError:
        return "checksums.json is unreadable"
    for name, digest in sums.items():
        file = path / name
        if not file.exists():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint that verifies; corrupt ones are named in a warning and skipped."""
    pointer = root / "latest"
    named = root / pointer.read_text().strip() if pointer.exists() else None
    candidates = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True) if root.exists() else []
    if named is not None and named in candidates:  # the pointer's choice first, then older ones
        candidates.remove(named)
        candidates.insert(0, named)
    for path in candidates:
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        log.warning("checkpoint %s is corrupt (%s): skipping it", path, problem)
    return None


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of `module` that require grad, contiguous CPU copies (what a LoRA checkpoint holds)."""
    return {name: p.detach().cpu().contiguous() for name, p in module.named_parameters() if p.requires_grad}


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module]) -> dict:
    for name, module in modules.items():
        file = path / f"{name}.safetensors"
        with safe_open(str(file), "pt") as handle:
            partial = (handle.metadata() or {}).get("trainable_only") == "1"
        if partial:  # LoRA: the trainable tensors only; every one of them must be there
            tensors = load_file(str(file), device=str(next(module.parameters()).device))
            unexpected = sorted(set(tensors) - {n for n, _ in module.named_parameters()})
            missing = sorted({n for n, p in module.named_parameters() if p.requires_grad} - set(tensors))
            if missing:
                raise RuntimeError(f"checkpoint {file} lacks trainable tensors {missing[:5]} (another train.lora "
                                   "setting?)")
            if not unexpected:
                module.load_state_dict(tensors, strict=False)
        else:
            missing, unexpected = load_model(module, str(file), strict=False)
        if unexpected:
            raise RuntimeError(f"checkpoint {path}/{name}.safetensors has unexpected tensors {unexpected[:5]}")
    # weights_only: a checkpoint is data, never code
    return torch.load(path / "trainer_state.pt", weights_only=True, map_location="cpu")
