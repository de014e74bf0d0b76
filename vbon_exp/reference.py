"""The reference reward cache: M samples per prompt from π_ref, scored, stored as sorted float32 rewards.

It estimates each prompt's reward CDF F_x (vBoN's reward, BoN's KL, win rates). A cache lives in
`<cache_dir>/reference/<key>/`, where the key hashes everything that determines its contents (reference model,
reward model, prompts, M, sampling settings, seed), so any run with the same key reuses it.

Layout: one `chunk-XXXXX.npz` per block of prompts (sorted float32 rewards [n, M], the reward of each prompt's first
draw `first_rewards` [n] (the seed code's win rate compares with it; sorting loses which sample came first),
optionally the first K response texts), each written to a temp file and renamed, with its SHA-256 in a `.sha256`
sidecar; `meta.json` is written last. Each chunk draws from its own seed, so an interrupted build resumes at the first
missing chunk and ends with exactly the cache an uninterrupted build would have written.

Storage (`encoding` = "f32-sortkey-delta-byteshuffle"): the vBoN reward and the win rates compare fresh float32
rewards with the cached ones, so the cache must give back exactly the float32 values it was given. Each float32 is
mapped to the unsigned 32-bit key whose integer order is the float order (sign bit flipped for non-negative values,
all bits flipped for negative ones: a bijection); a sorted row of keys is stored as its first key and the
differences of consecutive keys (small numbers: M sorted samples are dense), split into four byte planes (all
lowest bytes, then all second bytes, ...: the high planes are nearly all zeros) and deflated by the npz container.
Decoding is the exact inverse (a cumulative sum modulo 2³², the inverse bijection), so values round-trip bit for
bit, −0.0, denormals and ties included. About 2.3–2.6 bytes per reward for continuous rewards (raw float32 through
np.savez_compressed: ~3.7), far less for discrete ones. Plain npz arrays: readable with
`np.load(allow_pickle=False)`; chunks of the first format (a float32 `rewards` array) are still read. Chunks written
before `first_rewards` existed are read too: the cache then has no first-sample rewards (`win_rate_first` is left out
of the results, with a log line; delete the cache directory to rebuild it with them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vbon_exp import bon
from vbon_exp.modeling import Samples
from vbon_exp.progress import progress
from vbon_exp.rewards import score_samples
from vbon_exp.sampling import SamplingConfig, sample_responses
from vbon_exp.storage import atomic_write_bytes, build_lock, read_checked_npz, write_checked_npz
from vbon_exp.settings.reference import ReferenceConfig, cache_memory_bytes  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# The caches of a run's splits; any other name is an evaluation cache of the test prompts with its own M, keyed
# apart from the test cache by its name (key part `purpose`: the BoN pool of objective=bon is "bon_pool").
SPLITS = ("train", "test")


def task_caches(task, requests: dict, *, sampling: SamplingConfig, seed: int, settings: "ReferenceConfig",
                score_batch_size: int = 256, reward=None) -> dict[str, "ReferenceCache"]:
    """The reference caches a run asks for, name -> M: a split's cache ("train", "test"; M None: `reference.m` or
    `reference.test_m`) or an evaluation cache of the test prompts of that M (keyed by its name as `purpose`), scored
    by the task's reward, or by `reward` (an evaluation judge). The split is part of every key, so train and test
    caches never share samples (even on the synthetic task, whose train and test prompts are the same), and each
    chunk's seed hashes the key, so distinct keys draw from distinct seeds."""
    caches = {}
    for name, m in requests.items():
        split = name if name in SPLITS else "test"
        purpose = {} if name in SPLITS else {"purpose": name}
        caches[name] = build_reference_cache(
            reference=task.reference, reward=reward or task.reward, tokenizer=task.tokenizer,
            prompts=task.prompts(split), m=m if m is not None else settings.m_for(split), sampling=sampling,
            seed=seed, cache_dir=settings.cache_dir,
            key_parts={"reference": task.fingerprint["reference"],
                       "reward": task.fingerprint["reward"] if reward is None else reward.fingerprint,
                       "prompts": task.fingerprint[f"{split}_prompts"], "split": split, **purpose},
            eos_id=task.eos_id, pad_id=task.pad_id, chunk_prompts=settings.chunk_prompts,
            keep_texts=settings.keep_texts, score_batch_size=score_batch_size,
            desc=f"reference cache ({name}{'' if reward is None else ', judge ' + reward.name})",
        )
    return caches


@dataclass
class ReferenceCache:
    """Per-prompt sorted reference rewards, padded with +inf to a [P, M] table."""

    sorted_rewards: torch.Tensor  # [P, M] float64 (values are float32-exact)
    lengths: torch.Tensor  # [P]
    path: Path | None = None
    texts: list[list[str]] | None = None
    # [P] float64: each prompt's first draw's reward, in draw order (None for caches built before it was stored)
    first_rewards: torch.Tensor | None = None
    # chunks this process built (sampled and scored) when it loaded the cache; 0 when it reused them all
    built_chunks: int = 0

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


REWARD_ENCODING = "f32-sortkey-delta-byteshuffle"


def _float32_keys(values: np.ndarray) -> np.ndarray:
    """float32 → uint32 with the same order (a bijection on bit patterns)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def _float32_from_keys(keys: np.ndarray) -> np.ndarray:
    keys = keys.astype(np.uint32, copy=False)
    bits = np.where(keys & np.uint32(0x80000000), keys ^ np.uint32(0x80000000), ~keys).astype(np.uint32)
    return bits.view(np.float32)


def encode_sorted_rewards(rewards: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of float32 rewards [n, M] → the arrays of the compact encoding (rows come back sorted)."""
    rewards = np.asarray(rewards, dtype=np.float32)
    if rewards.ndim != 2:
        raise ValueError(f"expected a [prompts, M] array of rewards, got shape {rewards.shape}")
    keys = np.sort(_float32_keys(rewards), axis=1)
    deltas = keys.copy()
    deltas[:, 1:] = keys[:, 1:] - keys[:, :-1]  # ≥ 0: the keys are sorted
    planes = deltas.astype("<u4").reshape(-1).view(np.uint8).reshape(-1, 4).T  # [4, n·M] byte planes
    return {"encoding": np.array(REWARD_ENCODING), "shape": np.array(rewards.shape, dtype=np.int64),
            "reward_planes": np.ascontiguousarray(planes)}


def decode_sorted_rewards(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The float32 rewards [n, M] (sorted per row) of a chunk, in either storage format."""
    if "rewards" in arrays:  # first format: the float32 array itself
        return arrays["rewards"].astype(np.float32, copy=False)
    encoding = str(arrays["encoding"])
    if encoding != REWARD_ENCODING:
        raise ValueError(f"unknown reference cache reward encoding {encoding!r}")
    n, m = (int(x) for x in arrays["shape"])
    planes = arrays["reward_planes"]
    deltas = np.ascontiguousarray(planes.T).view("<u4").reshape(n, m).astype(np.uint32)
    keys = np.cumsum(deltas, axis=1, dtype=np.uint32)  # modulo 2³²: the exact inverse of the differences
    return _float32_from_keys(keys)


def read_chunk_rewards(path: str | Path) -> np.ndarray:
    """The sorted float32 rewards [n, M] stored in one chunk file, in either format (no checksum check: for
    inspection and tests; the cache itself reads chunks through their checksums)."""
    with np.load(path, allow_pickle=False) as z:
        return decode_sorted_rewards({k: z[k] for k in z.files})


def _write_chunk(path: Path, rewards: np.ndarray, texts: list[list[str]] | None) -> None:
    """`rewards` [n, M] in draw order: stored sorted, plus each row's first draw."""
    arrays = encode_sorted_rewards(rewards)
    arrays["first_rewards"] = np.ascontiguousarray(np.asarray(rewards, dtype=np.float32)[:, 0])
    if texts:
        arrays["texts"] = np.array(texts, dtype=str)  # fixed-width unicode: no pickle involved
    write_checked_npz(path, arrays)


def _read_chunk(path: Path) -> dict[str, np.ndarray] | None:
    """The chunk's arrays (`rewards`: float32 [n, M] sorted per row; `first_rewards` [n] and `texts` when stored),
    or None when it is missing, partial or corrupt (then it is rebuilt)."""
    arrays = read_checked_npz(path, "reference cache chunk")
    if arrays is None:
        return None
    out = {"rewards": decode_sorted_rewards(arrays)}
    for name in ("first_rewards", "texts"):
        if name in arrays:
            out[name] = arrays[name]
    return out


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
            # another sampler backend draws other samples from the same distribution (native keys are unchanged)
            **({"sampler": sampling.backend} if sampling.backend != "native" else {}),
        }
    )
    directory = Path(cache_dir) / "reference" / key
    with build_lock(directory, desc):  # processes needing this cache at once: one builds, the others then reuse it
        built, rows, texts, firsts = _load_or_build_chunks(
            directory, key, reference=reference, reward=reward, tokenizer=tokenizer, prompts=prompts, m=m,
            sampling=sampling, seed=seed, eos_id=eos_id, pad_id=pad_id, chunk_prompts=chunk_prompts,
            keep=min(keep_texts, m), score_batch_size=score_batch_size, desc=desc)
        meta_path = directory / "meta.json"
        if built or not meta_path.exists():
            meta = {"key": key, "version": CACHE_VERSION, "num_prompts": len(prompts), "m": m, **key_parts}
            atomic_write_bytes(meta_path, json.dumps(meta, indent=2, default=str).encode())
    log.info("%s: %s %d prompts × M=%d in %s", desc, f"built {built} chunk(s) of" if built else "reused", len(prompts),
             m, directory)
    return ReferenceCache.from_rows(rows, path=directory, texts=texts or None,
                                    first_rewards=_first_rewards(firsts, directory), built_chunks=built)


def _load_or_build_chunks(directory: Path, key: str, *, reference, reward, tokenizer, prompts, m, sampling, seed,
                          eos_id, pad_id, chunk_prompts, keep, score_batch_size, desc):
    """Every chunk of the cache, read where it is complete and built (sampled, scored, written) where it is not.
    Returns (chunks built, per-prompt sorted reward rows, kept texts, per-chunk first rewards)."""
    n_chunks = (len(prompts) + chunk_prompts - 1) // chunk_prompts
    rows: list[torch.Tensor] = []
    texts: list[list[str]] = []
    firsts: list[np.ndarray | None] = []
    built = 0
    bar = progress(range(n_chunks), desc=desc, unit="chunk", leave=False)
    for c in bar:
        path = directory / f"chunk-{c:05d}.npz"
        lo, hi = c * chunk_prompts, min(len(prompts), (c + 1) * chunk_prompts)
        arrays = _read_chunk(path)
        if arrays is None:
            built += 1
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
            _write_chunk(path, chunk_rewards, chunk_texts)  # sorted per row by the encoding
            arrays = _read_chunk(path)
        rows.extend(torch.from_numpy(r.astype(np.float64)) for r in arrays["rewards"])
        firsts.append(arrays.get("first_rewards"))
        if "texts" in arrays:
            texts.extend([list(t) for t in arrays["texts"]])
    bar.close()
    return built, rows, texts, firsts


def _first_rewards(firsts: list[np.ndarray | None], directory: Path) -> torch.Tensor | None:
    """The first draws' rewards of all prompts, or None (logged) when a chunk predates them."""
    if any(f is None for f in firsts):
        log.info("reference cache %s was built before first-sample rewards were stored: win_rate_first is left "
                 "out (delete the directory to rebuild the cache with them)", directory)
        return None
    return torch.from_numpy(np.concatenate(firsts).astype(np.float64))
