"""The compact reference-cache encoding (vbon_exp/reference.py): sorted float32 rewards stored as byte-shuffled
deltas of order-preserving uint32 keys. The vBoN reward and win rates compare fresh float32 rewards with cached
ones, so every value must come back bit for bit; the size bound is what `make bench` reports as
bytes_per_cached_reward (a size, not a time)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

import vbon_exp.reference as reference
from vbon_exp.reference import decode_sorted_rewards, encode_sorted_rewards
from vbon_exp.storage import npz_bytes


def _roundtrip(values: np.ndarray) -> np.ndarray:
    data = npz_bytes(encode_sorted_rewards(values))
    with np.load(io.BytesIO(data), allow_pickle=False) as z:  # plain arrays: no pickle anywhere
        return decode_sorted_rewards({k: z[k] for k in z.files})


def _sorted_bits(a: np.ndarray) -> np.ndarray:
    """Each row's bit patterns, sorted (a multiset comparison that tells −0.0 from +0.0)."""
    return np.sort(np.ascontiguousarray(a, dtype=np.float32).view(np.uint32), axis=1)


def test_every_float32_comes_back_bit_for_bit_and_sorted():
    rng = np.random.default_rng(0)
    f32 = np.finfo(np.float32)
    special = np.array([0.0, -0.0, f32.tiny, -f32.tiny, np.float32(1e-45), -np.float32(1e-45), f32.max, f32.min,
                        1.0, np.nextafter(np.float32(1), np.float32(2)), -1.0, 3.5, 3.5, 3.5], dtype=np.float32)
    rows = np.stack([
        np.resize(special, 64),
        rng.normal(size=64).astype(np.float32),
        np.full(64, -2.25, dtype=np.float32),  # all ties
        (rng.integers(-3, 4, size=64) * 0.5).astype(np.float32),  # discrete, negative and positive
        rng.uniform(-1e30, 1e30, size=64).astype(np.float32),
        rng.standard_cauchy(size=64).astype(np.float32),
    ])
    back = _roundtrip(rows)
    assert back.dtype == np.float32 and back.shape == rows.shape
    assert np.array_equal(_sorted_bits(back), _sorted_bits(rows))  # the same values, signed zeros included
    assert (np.diff(back.astype(np.float64), axis=1) >= 0).all()  # sorted per row
    random_order = rows.copy()
    for r in random_order:
        rng.shuffle(r)
    assert np.array_equal(_roundtrip(random_order).view(np.uint32), back.view(np.uint32))


def test_the_first_format_is_still_read():
    old = np.sort(np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32), axis=1)
    assert np.array_equal(decode_sorted_rewards({"rewards": old}), old)


def test_an_unknown_encoding_is_refused():
    arrays = encode_sorted_rewards(np.zeros((1, 4), dtype=np.float32))
    arrays["encoding"] = np.array("something-else")
    with pytest.raises(ValueError, match="something-else"):
        decode_sorted_rewards(arrays)


@pytest.mark.parametrize("kind", ["normal", "logit", "mean-of-48"])
def test_continuous_rewards_take_under_three_bytes_each(kind):
    """64 prompts × M = 256 continuous rewards (a chunk of a realistic cache): < 3 bytes a reward, against
    ~3.7 for float32 through np.savez_compressed; integer-valued rewards take a fraction of a byte."""
    rng = np.random.default_rng(2)
    values = {"normal": lambda: rng.normal(size=(64, 256)),
              "logit": lambda: rng.normal(2.0, 3.0, size=(64, 256)),
              "mean-of-48": lambda: rng.normal(size=(64, 256, 48)).mean(-1)}[kind]().astype(np.float32)
    size = len(npz_bytes(encode_sorted_rewards(values))) / values.size
    assert size < 3.0, size
    discrete = rng.integers(0, 10, size=(64, 256)).astype(np.float32)
    assert len(npz_bytes(encode_sorted_rewards(discrete))) / discrete.size < 0.5


def test_a_built_cache_round_trips_and_keeps_its_checksums(synthetic_task, tmp_path):
    """A cache built through build_reference_cache stores the new encoding, its checksum sidecars match, and a
    second load gives exactly the rewards of the first."""
    from test_reference import build

    cache = build(synthetic_task, tmp_path, m=256, chunk_prompts=2)
    chunks = sorted(cache.path.glob("chunk-*.npz"))
    assert len(chunks) == 2
    for chunk in chunks:
        with np.load(chunk, allow_pickle=False) as z:
            assert str(z["encoding"]) == reference.REWARD_ENCODING and "rewards" not in z.files
        import hashlib

        assert hashlib.sha256(chunk.read_bytes()).hexdigest() == chunk.with_suffix(".sha256").read_text().strip()
    again = build(synthetic_task, tmp_path, m=256, chunk_prompts=2)
    assert torch.equal(again.sorted_rewards, cache.sorted_rewards)
    assert torch.equal(cache.sorted_rewards, cache.sorted_rewards.float().double())  # float32-exact
    assert json.loads((cache.path / "meta.json").read_text())["m"] == 256
    # every cached value is one of the oracle's rewards of that prompt (nothing was rounded on the way)
    oracle = synthetic_task.oracle
    for i in range(4):
        assert bool(torch.isin(cache.sorted_rewards[i], oracle.rewards[i]).all())
