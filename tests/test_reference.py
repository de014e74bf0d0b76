"""vbon_exp/reference.py: the reference reward cache — keying, reuse, resumable chunked builds, contents."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import shifted

import vbon_exp.reference as reference
from vbon_exp.evaluation import ModelPolicy, measure
from vbon_exp.reference import ReferenceCache, build_reference_cache, cache_key
from vbon_exp.sampling import SamplingConfig

SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=5)


def build(task, cache_dir, *, m=64, sampling=SAMPLING, seed=0, chunk_prompts=1, keep_texts=0):
    return build_reference_cache(
        reference=task.reference, reward=task.reward, tokenizer=task.tokenizer, prompts=task.test_prompts, m=m,
        sampling=sampling, seed=shifted(seed), cache_dir=cache_dir,
        key_parts={"reference": task.fingerprint["reference"], "reward": task.fingerprint["reward"],
                   "prompts": task.fingerprint["test_prompts"]},
        eos_id=task.eos_id, pad_id=task.pad_id, chunk_prompts=chunk_prompts, keep_texts=keep_texts,
    )


@pytest.fixture
def count_sampler_calls(monkeypatch):
    """Wrap the sampler the cache uses; `calls[0]` counts its invocations (one per chunk built)."""
    calls = [0]
    real = reference.sample_responses

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(reference, "sample_responses", counting)
    return calls


def test_cache_contents(synthetic_task, tmp_path):
    cache = build(synthetic_task, tmp_path, m=64, chunk_prompts=3, keep_texts=2)
    oracle = synthetic_task.oracle
    assert cache.sorted_rewards.shape == (4, 64) and cache.lengths.tolist() == [64] * 4 and cache.m == 64
    assert cache.sorted_rewards.dtype == torch.float64
    # sorted per row, float32-exact
    assert bool((cache.sorted_rewards[:, 1:] >= cache.sorted_rewards[:, :-1]).all())
    assert torch.equal(cache.sorted_rewards, cache.sorted_rewards.float().double())
    # row i holds rewards of prompt i's responses (rows are not shuffled across prompts or chunks)
    for i in range(4):
        assert bool(torch.isin(cache.sorted_rewards[i], oracle.rewards[i]).all()), i
        other = oracle.rewards[(i + 1) % 4]
        assert not bool(torch.isin(cache.sorted_rewards[i], other).all())
    # kept texts: 2 per prompt, each a decoded 5-symbol response
    assert cache.texts is not None and len(cache.texts) == 4 and all(len(t) == 2 for t in cache.texts)
    assert all(len(text.split()) == 5 for row in cache.texts for text in row)
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["m"] == 64 and meta["num_prompts"] == 4 and meta["key"] == cache.path.name
    assert sorted(p.name for p in cache.path.glob("chunk-*.npz")) == ["chunk-00000.npz", "chunk-00001.npz"]


def test_second_build_reuses_the_cache(synthetic_task, tmp_path, monkeypatch):
    first = build(synthetic_task, tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the cache was rebuilt although it exists")

    monkeypatch.setattr(reference, "sample_responses", refuse)
    second = build(synthetic_task, tmp_path)
    assert second.path == first.path
    assert torch.equal(second.sorted_rewards, first.sorted_rewards)


def test_key_changes_with_everything_that_defines_the_cache(synthetic_task, tmp_path):
    base = build(synthetic_task, tmp_path, m=16).path
    other = {
        "m": build(synthetic_task, tmp_path, m=17).path,
        "temperature": build(synthetic_task, tmp_path, m=16, sampling=SamplingConfig(0.7, max_new_tokens=5)).path,
        "top_k": build(synthetic_task, tmp_path, m=16, sampling=SamplingConfig(1.0, top_k=3, max_new_tokens=5)).path,
        "seed": build(synthetic_task, tmp_path, m=16, seed=1).path,
    }
    assert len({base, *other.values()}) == 1 + len(other), other
    assert all(p.parent == base.parent == tmp_path / "reference" for p in other.values())
    assert cache_key({"a": 1}) == cache_key({"a": 1}) != cache_key({"a": 2})


def _chunks(cache: ReferenceCache):
    return sorted(cache.path.glob("chunk-*.npz"))


@pytest.mark.parametrize("damage", ["delete", "flip-byte", "delete-sidecar"])
def test_damaged_chunk_is_rebuilt_alone_and_identically(synthetic_task, tmp_path, count_sampler_calls, damage):
    full = build(synthetic_task, tmp_path)
    assert count_sampler_calls[0] == 4  # 4 prompts, 1 per chunk
    victim = _chunks(full)[2]
    if damage == "delete":
        victim.unlink()
    elif damage == "flip-byte":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:
        victim.with_suffix(".sha256").unlink()
    count_sampler_calls[0] = 0
    again = build(synthetic_task, tmp_path)
    assert count_sampler_calls[0] == 1  # only the damaged chunk
    assert torch.equal(again.sorted_rewards, full.sorted_rewards)


class Killed(BaseException):
    """Stands for the process being killed mid-build (a BaseException, like KeyboardInterrupt)."""


def test_interrupted_build_resumes_to_the_uninterrupted_cache(synthetic_task, tmp_path, monkeypatch):
    uninterrupted = build(synthetic_task, tmp_path / "a")
    calls = [0]
    real = reference.sample_responses

    def dies_on_third_chunk(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise Killed  # the build dies while sampling chunk 2
        return real(*args, **kwargs)

    monkeypatch.setattr(reference, "sample_responses", dies_on_third_chunk)
    with pytest.raises(Killed):
        build(synthetic_task, tmp_path / "b")
    partial_dir = tmp_path / "b" / "reference" / uninterrupted.path.name
    assert len(list(partial_dir.glob("chunk-*.npz"))) == 2 and not (partial_dir / "meta.json").exists()
    assert not list(partial_dir.glob(".*.tmp"))  # no temp files left behind
    calls[0] = 10  # no more interruptions
    resumed = build(synthetic_task, tmp_path / "b")
    assert calls[0] == 12  # chunks 2 and 3 only
    assert torch.equal(resumed.sorted_rewards, uninterrupted.sorted_rewards)
    assert (partial_dir / "meta.json").exists()


def test_from_rows_handles_ragged_rows():
    cache = ReferenceCache.from_rows([torch.tensor([3.0, 1.0, 2.0]), torch.tensor([5.0])])
    assert cache.lengths.tolist() == [3, 1] and cache.m == 3
    assert cache.mean_reward().tolist() == [2.0, 5.0]
    pidx = torch.tensor([0, 0, 1, 1])
    r = torch.tensor([2.0, 0.0, 5.0, 6.0])
    assert cache.win_prob(pidx, r).tolist() == [0.5, 0.0, 0.5, 1.0]
    assert torch.allclose(cache.log_cdf_hat(pidx, r), torch.log(torch.tensor([2 / 4, 1 / 4, 1 / 2, 2 / 2],
                                                                            dtype=torch.float64)))


def test_reference_wins_half_the_time_against_its_own_cache(synthetic_task, tmp_path):
    """Fresh π_ref samples vs a cache of π_ref samples: win rate (ties ½) is ½ in expectation, for discrete
    rewards too. Tolerance 0.02: the spread of the estimate is at most √((1/(12M) + 1/(12n))/P) = 0.0039 for
    M = 2048 cached and n = 4000 fresh samples per prompt over P = 4 prompts, so 0.02 is > 5 SD (fixed seeds:
    deterministic). Measured: 0.4986 ± 0.0023 (reported SE, fresh samples only)."""
    task = synthetic_task
    cache = build(task, tmp_path, m=2048, chunk_prompts=64)
    policy = ModelPolicy(task.reference, task, SAMPLING)
    m = measure(policy, task, {"test": cache}, samples_per_prompt=4000, seed=shifted(2), bootstrap=0)[0]
    assert m["win_rate"] == pytest.approx(0.5, abs=0.02), m
    assert m["exact_win_rate"] == pytest.approx(0.5, abs=1e-12)
    # the policy is π_ref itself: every KL is exactly 0 (same model, same inputs, same arithmetic)
    assert m["kl_full"] == 0.0 and m["kl_k1"] == 0.0 and m["kl_k3"] == 0.0 and m["kl"] == 0.0
    assert m["exact_kl"] == 0.0
    assert m["kl_estimator"] == "full"


def test_cache_stores_each_prompts_first_draw(synthetic_task, tmp_path, monkeypatch):
    """`first_rewards[p]` is the reward of prompt p's first draw, in draw order (what the sorted rows lose): the
    sampler's first row of each prompt, recorded as the cache scores it."""
    drawn = []
    real = reference.score_samples

    def recording(reward, samples, *args, **kwargs):
        out = real(reward, samples, *args, **kwargs)
        drawn.append(samples.rewards.clone())
        return out

    monkeypatch.setattr(reference, "score_samples", recording)
    cache = build(synthetic_task, tmp_path, m=32, chunk_prompts=3)
    firsts = torch.cat([d.view(-1, 32)[:, 0] for d in drawn]).double()
    assert torch.equal(cache.first_rewards, firsts)
    assert not torch.equal(cache.first_rewards, cache.sorted_rewards[:, 0])  # precondition: not the row minimum
    again = build(synthetic_task, tmp_path, m=32, chunk_prompts=3)  # read back from the chunks
    assert torch.equal(again.first_rewards, firsts)


def test_chunks_without_first_rewards_are_read_and_say_so(synthetic_task, tmp_path, monkeypatch, caplog):
    """Chunks written before first-sample rewards were stored (no `first_rewards` array) are read as they are, not
    rebuilt: the cache has no first rewards, a log line says so, and the evaluator leaves win_rate_first out."""
    from vbon_exp.storage import read_checked_npz, write_checked_npz

    cache = build(synthetic_task, tmp_path, m=32, chunk_prompts=3)
    for chunk in _chunks(cache):
        arrays = read_checked_npz(chunk, "test")
        write_checked_npz(chunk, {k: v for k, v in arrays.items() if k != "first_rewards"})

    def refuse(*args, **kwargs):
        raise AssertionError("an old chunk was rebuilt")

    monkeypatch.setattr(reference, "sample_responses", refuse)
    with caplog.at_level("INFO", logger="vbon_exp.reference"):
        old = build(synthetic_task, tmp_path, m=32, chunk_prompts=3)
    assert old.first_rewards is None and torch.equal(old.sorted_rewards, cache.sorted_rewards)
    assert "win_rate_first is left out" in caplog.text
    monkeypatch.undo()
    m = measure(ModelPolicy(synthetic_task.reference, synthetic_task, SAMPLING), synthetic_task, {"test": old},
                samples_per_prompt=8, seed=shifted(0), bootstrap=10)[0]
    assert "win_rate_first" not in m and "win_rate_first_se" not in m["se_covers"]
    assert "win_rate" in m and m["se_covers"]["win_rate_se"] == "policy samples + reference cache (bootstrap B=10)"
