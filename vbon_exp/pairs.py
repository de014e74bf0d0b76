"""Preference pairs from the reference model: a cache of scored π_ref samples per train prompt, and the (best,
worst)-of-n pairs drawn from it, for DPO, IPO and BoNBoN.

The cache is a stream of i.i.d. π_ref samples per prompt (token ids, lengths, float32 rewards), stored in blocks
that double in size: block 0 holds FIRST_BLOCK samples per prompt, block b ≥ 1 holds FIRST_BLOCK·2^(b−1), so blocks
0..b hold FIRST_BLOCK·2^b. A run that needs S samples per prompt (n per pair × pairs per prompt) reads the first S
of the stream, building the missing blocks; a run that needs fewer reads a prefix of the same blocks. So every
member of a β sweep (n = 1/β + 1 changes with β) reads one stream, sampled once by the member that needs the most
(at most twice what it needs, none of it when S is a power of two times FIRST_BLOCK).

Like the reference reward cache (vbon_exp/reference.py, whose key function and atomic writes it reuses) it lives
in `<cache_dir>/pair_samples/<key>/`, the key hashing everything that determines the samples (reference model,
reward model, train prompts, sampling settings, seed, chunking); one `chunk-XXXXX-block-XXXXX.npz` per block of
prompts × block of samples, each written to a temp file and renamed, with its SHA-256 in a `.sha256` sidecar, and
each drawn from its own seed, so an interrupted build resumes at the first missing file and ends with exactly the
samples an uninterrupted one would have drawn. Token ids (texts decode from them with the task's tokenizer),
lengths and rewards are plain npz arrays (`np.load(allow_pickle=False)`)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vbon_exp.modeling import Samples
from vbon_exp.progress import progress
from vbon_exp.reference import cache_key
from vbon_exp.rewards import RewardError, score_samples
from vbon_exp.sampling import SamplingConfig, left_pad, sample_responses
from vbon_exp.storage import atomic_write_bytes, build_lock, read_checked_npz, write_checked_npz

log = logging.getLogger(__name__)

PAIR_CACHE_VERSION = 1
FIRST_BLOCK = 2  # samples per prompt in block 0 (the smallest pair)


class NoPairError(RewardError):
    """Every group of n reference samples of a prompt ties on the reward: no (best, worst) pair exists."""


def block_size(b: int) -> int:
    return FIRST_BLOCK if b == 0 else FIRST_BLOCK << (b - 1)


def blocks_needed(count: int) -> int:
    """How many blocks hold at least `count` samples per prompt."""
    b, held = 0, 0
    while held < count:
        held += block_size(b)
        b += 1
    return b


@dataclass
class SampleTable:
    """The first `count` cached π_ref samples of every prompt, in stream order."""

    response_ids: torch.Tensor  # [P, S, L] long, right-padded with pad_id
    lengths: torch.Tensor  # [P, S] long: response tokens (up to and including EOS)
    rewards: torch.Tensor  # [P, S] float32
    path: Path | None = None
    built_blocks: int = 0  # blocks this process drew when it loaded the table (0: all reused)

    @property
    def count(self) -> int:
        return int(self.rewards.shape[1])


def _id_dtype(max_id: int):
    return np.uint8 if max_id < 2**8 else np.uint16 if max_id < 2**16 else np.int32


def _write_block(path: Path, ids: np.ndarray, lengths: np.ndarray, rewards: np.ndarray) -> None:
    write_checked_npz(path, {"response_ids": ids.astype(_id_dtype(int(ids.max(initial=0)))),
                             "lengths": lengths.astype(np.int32), "rewards": rewards.astype(np.float32)})


def _read_block(path: Path) -> dict[str, np.ndarray] | None:
    """The block's arrays, or None when it is missing, partial or corrupt (then it is rebuilt)."""
    return read_checked_npz(path, "pair sample cache block")


def build_sample_table(
    *,
    reference,
    reward,
    prompts: list[list[int]],
    count: int,
    sampling: SamplingConfig,
    seed: int,
    cache_dir: str | Path,
    key_parts: dict,
    eos_id: int | None,
    pad_id: int,
    chunk_prompts: int = 64,
    score_batch_size: int = 256,
    desc: str = "pair samples",
) -> SampleTable:
    """The first `count` π_ref samples of every prompt, loading the cache and building its missing blocks."""
    key = cache_key({
        "kind": "pair-samples", "pair_cache_version": PAIR_CACHE_VERSION, **key_parts,
        "temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
        "max_new_tokens": sampling.max_new_tokens, "seed": seed, "chunk_prompts": chunk_prompts,
        "first_block": FIRST_BLOCK, "num_prompts": len(prompts),
        **({"sampler": sampling.backend} if sampling.backend != "native" else {}),
    })
    directory = Path(cache_dir) / "pair_samples" / key
    with build_lock(directory, desc):  # processes needing these samples at once: one draws them, the others reuse
        chunks, built = _load_or_build_blocks(directory, key, reference=reference, reward=reward, prompts=prompts,
                                              count=count, sampling=sampling, seed=seed, eos_id=eos_id, pad_id=pad_id,
                                              chunk_prompts=chunk_prompts, score_batch_size=score_batch_size,
                                              desc=desc)
        meta = directory / "meta.json"
        if built or not meta.exists():
            atomic_write_bytes(meta, json.dumps({"key": key, "version": PAIR_CACHE_VERSION,
                                                 "num_prompts": len(prompts), "first_block": FIRST_BLOCK, **key_parts},
                                                indent=2, default=str).encode())
    width = max(ch[0].shape[-1] for ch in chunks)
    ids = torch.cat([torch.nn.functional.pad(ch[0], (0, width - ch[0].shape[-1]), value=pad_id) for ch in chunks])
    table = SampleTable(ids[:, :count].contiguous(), torch.cat([ch[1] for ch in chunks])[:, :count].contiguous(),
                        torch.cat([ch[2] for ch in chunks])[:, :count].contiguous(), path=directory,
                        built_blocks=built)
    log.info("%s: %s %d prompts × %d samples in %s", desc, f"built {built} blocks," if built else "reused",
             len(prompts), count, directory)
    return table


def _load_or_build_blocks(directory: Path, key: str, *, reference, reward, prompts, count, sampling, seed, eos_id,
                          pad_id, chunk_prompts, score_batch_size, desc):
    """The blocks holding the first `count` samples of every chunk of prompts, read where complete and drawn (sampled,
    scored, written) where not. Returns (per chunk: ids, lengths, rewards; blocks built)."""
    n_chunks = (len(prompts) + chunk_prompts - 1) // chunk_prompts
    n_blocks = blocks_needed(count)
    device = next(reference.parameters()).device
    chunks, built = [], 0
    bar = progress(total=n_chunks * n_blocks, desc=desc, unit="block", leave=False)
    for c in range(n_chunks):
        lo, hi = c * chunk_prompts, min(len(prompts), (c + 1) * chunk_prompts)
        blocks = []
        for b in range(n_blocks):
            path = directory / f"chunk-{c:05d}-block-{b:05d}.npz"
            arrays = _read_block(path)
            if arrays is None:
                built += 1
                size = block_size(b)
                # one seed per (chunk, block): a resumed or extended build draws what an uninterrupted one would
                generator = torch.Generator(device=device).manual_seed(
                    int(hashlib.sha256(f"{seed}:{key}:{c}:{b}".encode()).hexdigest()[:15], 16))
                samples = sample_responses(reference, prompts[lo:hi], size, sampling, eos_id=eos_id, pad_id=pad_id,
                                           generator=generator, prompt_index=list(range(lo, hi)))
                score_samples(reward, samples, score_batch_size, what=f"pair sample cache chunk {c} block {b}")
                width = samples.response_ids.shape[1]
                _write_block(path, samples.response_ids.view(hi - lo, size, width).cpu().numpy(),
                             samples.response_mask.sum(-1).view(hi - lo, size).cpu().numpy(),
                             samples.rewards.view(hi - lo, size).cpu().numpy())
                arrays = _read_block(path)
            blocks.append(arrays)
            bar.update(1)
        chunks.append(_concat_blocks(blocks, pad_id))
    bar.close()
    return chunks, built


def _concat_blocks(blocks: list[dict[str, np.ndarray]], pad_id: int):
    width = max(a["response_ids"].shape[-1] for a in blocks)
    ids = [torch.from_numpy(a["response_ids"].astype(np.int64)) for a in blocks]
    ids = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[-1]), value=pad_id) for t in ids], dim=1)
    lengths = torch.cat([torch.from_numpy(a["lengths"].astype(np.int64)) for a in blocks], dim=1)
    rewards = torch.cat([torch.from_numpy(a["rewards"]) for a in blocks], dim=1)
    return ids, lengths, rewards


# --------------------------------------------------------------------------- (best, worst) pairs


def best_worst(rewards: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For groups [..., n] of rewards: index of the best and of the worst sample of each group, ties broken
    uniformly at random by `generator`, and whether the group ties throughout (then it has no pair)."""
    keys_best = torch.rand(rewards.shape, generator=generator, dtype=torch.float64)
    keys_worst = torch.rand(rewards.shape, generator=generator, dtype=torch.float64)
    top = rewards.max(-1, keepdim=True).values
    bottom = rewards.min(-1, keepdim=True).values
    best = torch.where(rewards == top, keys_best, -1.0).argmax(-1)
    worst = torch.where(rewards == bottom, keys_worst, -1.0).argmax(-1)
    return best, worst, (top == bottom).squeeze(-1)


@dataclass
class PairSet:
    """Aligned (chosen, rejected) samples: row i of each is one pair of train prompt `chosen.prompt_index[i]`."""

    chosen: Samples
    rejected: Samples
    n: int  # samples per pair
    dropped: int  # groups of n whose samples all tied (no pair)

    def __len__(self) -> int:
        return len(self.chosen)


def make_pairs(table: SampleTable, prompts: list[list[int]], n: int, pairs_per_prompt: int, *, seed: int,
               pad_id: int, prompt_text=None, reward_name: str = "?") -> PairSet:
    """Group the first n·pairs_per_prompt cached samples of each prompt into pairs_per_prompt groups of n and keep
    (best, worst) of each. A group whose n rewards are all equal has no pair and is dropped; a prompt left with no
    pair at all stops here (NoPairError naming it), before anything is trained."""
    p, k = len(prompts), pairs_per_prompt
    need = n * k
    if table.count < need:
        raise ValueError(f"the sample table holds {table.count} samples per prompt, {need} are needed")
    rewards = table.rewards[:, :need].reshape(p, k, n)
    generator = torch.Generator().manual_seed(int(hashlib.sha256(f"pair-ties:{seed}:{n}".encode()).hexdigest()[:15],
                                                  16))
    best, worst, tied = best_worst(rewards, generator)
    no_pair = tied.all(-1).nonzero().flatten().tolist()
    if no_pair:
        i = no_pair[0]
        text = prompt_text(i) if prompt_text is not None else str(prompts[i])
        others = f" (and {len(no_pair) - 1} more prompts)" if len(no_pair) > 1 else ""
        raise NoPairError(
            f"train prompt {i} {text!r}: all {n} reference samples of each of its {k} group(s) score the same "
            f"reward {float(rewards[i, 0, 0]):g} under reward model {reward_name!r}, so it has no (best, worst) "
            f"pair{others}. Use a reward that tells the samples apart, a larger n (objective.n, or pair_n for dpo/ipo) "
            "or more objective.pairs_per_prompt"
        )
    keep = ~tied  # [P, K]
    prompt_idx = torch.arange(p)[:, None].expand(p, k)[keep]
    base = (torch.arange(k) * n)[None, :].expand(p, k)
    chosen_col = (base + best)[keep]
    rejected_col = (base + worst)[keep]
    prompt_ids, prompt_mask = left_pad([prompts[i] for i in range(p)], pad_id, "cpu")

    def side(cols: torch.Tensor) -> Samples:
        ids = table.response_ids[prompt_idx, cols]
        mask = (torch.arange(ids.shape[1])[None, :] < table.lengths[prompt_idx, cols][:, None]).long()
        return Samples(prompt_idx.clone(), prompt_ids[prompt_idx], prompt_mask[prompt_idx], ids, mask,
                       table.rewards[prompt_idx, cols].clone())

    dropped = int(tied.sum())
    if dropped:
        log.warning("%d of %d groups of n=%d reference samples tie on the reward and make no pair (dropped)",
                    dropped, p * k, n)
    return PairSet(side(chosen_col), side(rejected_col), n, dropped)
