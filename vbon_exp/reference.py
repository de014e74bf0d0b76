"""The reference reward cache: M samples per prompt from π_ref, scored, stored as sorted float32 rewards.

It estimates each prompt's reward CDF F_x (vBoN's reward, BoN's KL, win rates). A cache lives in
`<cache_dir>/reference/<key>/`, where the key hashes everything that determines its contents (reference model,
reward model, prompts, M, sampling settings, seed), so any run with the same key reuses it.

Layout: one `chunk-XXXXX.npz` per block of prompts (sorted rewards [n, M] float32, optionally the first K
response texts), each written to a temp file and renamed, with its SHA-256 in a `.sha256` sidecar; `meta.json`
is written last. Each chunk draws from its own seed, so an interrupted build resumes at the first missing chunk
and ends with exactly the cache an uninterrupted build would have written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vbon_exp import bon
from vbon_exp.modeling import Samples
from vbon_exp.rewards import score_samples
from vbon_exp.sampling import SamplingConfig, sample_responses

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class ReferenceCache:
    """Per-prompt sorted reference rewards, padded with +inf to a [P, M] table."""

    sorted_rewards: torch.Tensor  # [P, M] float64 (values are float32-exact)
    lengths: torch.Tensor  # [P]
    path: Path | None = None
    texts: list[list[str]] | None = None

    @classmethod
    def from_rows(cls, rows: list[torch.Tensor], **kw) -> "ReferenceCache":
        table, lengths = bon.pad_sorted_rewards(rows)
        return cls(table, lengths, **kw)

    @property
    def m(self) -> int:
        return int(self.lengths.max())

    def log_cdf_hat(self, prompt_index: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        return bon.log_cdf_hat(self.sorted_rewards, self.lengths, prompt_index.cpu(), rewards.cpu())

    def win_prob(self, prompt_index: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        return bon.win_prob(self.sorted_rewards, self.lengths, prompt_index.cpu(), rewards.cpu())

    def mean_reward(self) -> torch.Tensor:
        finite = torch.where(torch.isfinite(self.sorted_rewards), self.sorted_rewards, 0.0)
        return finite.sum(-1) / self.lengths


def cache_key(parts: dict) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
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


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _write_chunk(path: Path, rewards: np.ndarray, texts: list[list[str]] | None) -> None:
    arrays = {"rewards": rewards.astype(np.float32)}
    if texts:
        arrays["texts"] = np.array(texts, dtype=str)  # fixed-width unicode: no pickle involved
    data = _npz_bytes(arrays)
    # the sidecar goes first: a chunk without a matching checksum is treated as missing and rebuilt
    _atomic_write_bytes(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
    _atomic_write_bytes(path, data)


def _read_chunk(path: Path) -> dict[str, np.ndarray] | None:
    """The chunk's arrays, or None when it is missing, partial or corrupt (then it is rebuilt)."""
    sidecar = path.with_suffix(".sha256")
    if not path.exists() or not sidecar.exists():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sidecar.read_text().strip():
        log.warning("reference cache chunk %s fails its checksum: rebuilding it", path)
        return None
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _decode_texts(tokenizer, samples: Samples, m: int, keep: int) -> list[list[str]]:
    rows = []
    for start in range(0, len(samples), m):
        texts = []
        for j in range(start, start + keep):
            ids = samples.response_ids[j][samples.response_mask[j].bool()].tolist()
            texts.append(tokenizer.decode(ids, skip_special_tokens=True))
        rows.append(texts)
    return rows


def build_reference_cache(
    *,
    reference,
    reward,
    tokenizer,
    prompts: list[list[int]],
    m: int,
    sampling: SamplingConfig,
    seed: int,
    cache_dir: str | Path,
    key_parts: dict,
    eos_id: int | None,
    pad_id: int,
    chunk_prompts: int = 64,
    keep_texts: int = 0,
    score_batch_size: int = 256,
    desc: str = "reference cache",
) -> ReferenceCache:
    """Load the cache for these settings, building (or finishing) it first when needed."""
    key = cache_key(
        {
            **key_parts,
            "m": m,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens,
            "seed": seed,
            "chunk_prompts": chunk_prompts,
            "keep_texts": keep_texts,
            "num_prompts": len(prompts),
        }
    )
    directory = Path(cache_dir) / "reference" / key
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "meta.json"
    n_chunks = (len(prompts) + chunk_prompts - 1) // chunk_prompts
    keep = min(keep_texts, m)

    rows: list[torch.Tensor] = []
    texts: list[list[str]] = []
    todo = 0
    bar = tqdm(range(n_chunks), desc=desc, unit="chunk", leave=False)
    for c in bar:
        path = directory / f"chunk-{c:05d}.npz"
        lo, hi = c * chunk_prompts, min(len(prompts), (c + 1) * chunk_prompts)
        arrays = _read_chunk(path)
        if arrays is None:
            todo += 1
            # one seed per chunk: a resumed build draws exactly what an uninterrupted one would have
            generator = torch.Generator(device=next(reference.parameters()).device).manual_seed(
                int(hashlib.sha256(f"{seed}:{key}:{c}".encode()).hexdigest()[:15], 16)
            )
            samples = sample_responses(
                reference, prompts[lo:hi], m, sampling, eos_id=eos_id, pad_id=pad_id, generator=generator,
                prompt_index=list(range(lo, hi)),
            )
            score_samples(reward, samples, score_batch_size, what=f"reference cache chunk {c}")
            chunk_rewards = samples.rewards.view(hi - lo, m).numpy()
            chunk_texts = _decode_texts(tokenizer, samples, m, keep) if keep else None
            _write_chunk(path, np.sort(chunk_rewards, axis=1), chunk_texts)
            arrays = _read_chunk(path)
        rows.extend(torch.from_numpy(r.astype(np.float64)) for r in arrays["rewards"])
        if "texts" in arrays:
            texts.extend([list(t) for t in arrays["texts"]])
    bar.close()
    if todo or not meta_path.exists():
        meta = {"key": key, "version": CACHE_VERSION, "num_prompts": len(prompts), "m": m, **key_parts}
        _atomic_write_bytes(meta_path, json.dumps(meta, indent=2, default=str).encode())
    log.info(
        "%s: %s %d prompts × M=%d in %s", desc, "built" if todo else "reused", len(prompts), m, directory
    )
    return ReferenceCache.from_rows(rows, path=directory, texts=texts or None)
