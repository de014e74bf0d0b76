"""The pair sample cache (vbon_exp/pairs.py): a content-keyed stream of scored π_ref samples that runs needing
fewer samples read a prefix of, built in atomic, checksummed, separately seeded blocks (so a resumed or extended
build equals an uninterrupted one); and the (best, worst)-of-n pairs cut from it."""

from __future__ import annotations

import pytest
import torch
from conftest import seeded, shifted

from vbon_exp.pairs import NoPairError, best_worst, block_size, blocks_needed, build_sample_table, make_pairs
from vbon_exp.sampling import SamplingConfig


def table(task, cache_dir, count, seed=0):
    return build_sample_table(
        reference=task.reference, reward=task.reward, prompts=task.train_prompts, count=count,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=5), seed=shifted(seed), cache_dir=cache_dir,
        key_parts={"reference": task.fingerprint["reference"], "reward": task.fingerprint["reward"],
                   "prompts": task.fingerprint["train_prompts"]},
        eos_id=task.eos_id, pad_id=task.pad_id, chunk_prompts=3,
    )


def test_blocks_double():
    assert [block_size(b) for b in range(5)] == [2, 2, 4, 8, 16]
    assert [blocks_needed(c) for c in (1, 2, 3, 4, 5, 8, 9, 32)] == [1, 1, 2, 2, 3, 3, 4, 5]


def test_a_smaller_run_reads_a_prefix_of_the_same_stream(synthetic_task, tmp_path):
    big = table(synthetic_task, tmp_path, 24)
    files = sorted(p.name for p in big.path.glob("*.npz"))
    assert len(files) == 2 * blocks_needed(24)  # 4 prompts in chunks of 3: two chunks
    small = table(synthetic_task, tmp_path, 10)  # reuses the blocks: nothing new is written
    assert sorted(p.name for p in small.path.glob("*.npz")) == files and small.path == big.path
    torch.testing.assert_close(small.response_ids, big.response_ids[:, :10], rtol=0, atol=0)
    torch.testing.assert_close(small.rewards, big.rewards[:, :10], rtol=0, atol=0)
    assert small.rewards.dtype == torch.float32 and small.response_ids.shape == (4, 10, 5)
    assert bool((small.lengths == 5).all())
    # the rewards are the task's reward of the cached ids
    p = torch.tensor(synthetic_task.train_prompts)[:, -1]
    again = synthetic_task.reward.score_ids(p[:, None].expand(4, 10).reshape(-1), big.response_ids[:, :10].reshape(-1, 5))
    torch.testing.assert_close(again.float().view(4, 10), small.rewards)
    # another seed is another stream, in another directory
    assert table(synthetic_task, tmp_path, 10, seed=1).path != big.path


def test_an_extended_or_repaired_build_equals_a_fresh_one(synthetic_task, tmp_path):
    fresh = table(synthetic_task, tmp_path / "fresh", 24)
    table(synthetic_task, tmp_path / "grown", 4)  # a small run first, then a bigger one extends the stream
    grown = table(synthetic_task, tmp_path / "grown", 24)
    torch.testing.assert_close(grown.response_ids, fresh.response_ids, rtol=0, atol=0)
    # a corrupt block (checksum mismatch) and a missing one are rebuilt, identically
    blocks = sorted(grown.path.glob("chunk-00001-block-*.npz"))
    blocks[-1].write_bytes(b"garbage")
    blocks[0].unlink()
    repaired = table(synthetic_task, tmp_path / "grown", 24)
    torch.testing.assert_close(repaired.response_ids, fresh.response_ids, rtol=0, atol=0)
    torch.testing.assert_close(repaired.rewards, fresh.rewards, rtol=0, atol=0)


def test_best_worst_breaks_ties_by_the_seed():
    rewards = torch.tensor([[[1.0, 3.0, 3.0, 0.0, 0.0]]]).expand(2000, 1, 5)
    best, worst, tied = best_worst(rewards, seeded(0))
    assert not tied.any() and set(best.flatten().tolist()) == {1, 2} and set(worst.flatten().tolist()) == {3, 4}
    assert abs(float((best == 1).float().mean()) - 0.5) < 0.05  # uniform among the tied
    again, _, _ = best_worst(rewards, seeded(0))
    assert torch.equal(best, again)
    _, _, tied = best_worst(torch.tensor([[2.0, 2.0], [1.0, 2.0]]), seeded(0))
    assert tied.tolist() == [True, False]


def tied_groups(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """[P, K] whether each group of n samples ties throughout (the peaky π_ref repeats responses, so whether a group
    of a few draws ties depends on the draws, hence on the CPU: tests count ties, they never assume none)."""
    groups = rewards.view(rewards.shape[0], -1, n)
    return groups.max(-1).values == groups.min(-1).values


def test_pairs_are_best_and_worst_of_each_group(synthetic_task, tmp_path):
    t = table(synthetic_task, tmp_path, 12)
    pairs = make_pairs(t, synthetic_task.train_prompts, 4, 3, seed=shifted(0), pad_id=0)
    groups, kept = t.rewards.view(4, 3, 4), ~tied_groups(t.rewards, 4)
    assert pairs.dropped == int((~kept).sum()) and len(pairs) == int(kept.sum())  # tied groups: dropped, counted
    torch.testing.assert_close(pairs.chosen.rewards, groups.max(-1).values[kept])
    torch.testing.assert_close(pairs.rejected.rewards, groups.min(-1).values[kept])
    assert bool((pairs.chosen.rewards > pairs.rejected.rewards).all())
    assert pairs.chosen.prompt_index.tolist() == torch.arange(4)[:, None].expand(4, 3)[kept].tolist()
    assert torch.equal(pairs.rejected.prompt_index, pairs.chosen.prompt_index)
    for side in (pairs.chosen, pairs.rejected):  # each side is a sample of its prompt's cached stream, with its reward
        for row in range(len(side)):
            i = int(side.prompt_index[row])
            assert torch.equal(side.prompt_ids[row], torch.tensor(synthetic_task.train_prompts[i]))
            same = (t.response_ids[i] == side.response_ids[row]).all(-1) & (t.rewards[i] == side.rewards[row])
            assert bool(same.any())


def test_a_prompt_whose_samples_all_tie_is_named(synthetic_task, tmp_path):
    t = table(synthetic_task, tmp_path, 8)
    t.rewards = torch.arange(t.rewards.numel(), dtype=torch.float32).view_as(t.rewards)  # distinct: no tie by chance
    t.rewards[1, :4] = 0.5  # prompt 1: its first group ties, its second does not → that group is dropped
    pairs = make_pairs(t, synthetic_task.train_prompts, 4, 2, seed=shifted(0), pad_id=0)
    assert pairs.dropped == 1 and len(pairs) == 7 and pairs.chosen.prompt_index.tolist().count(1) == 1
    t.rewards[2] = 0.25  # prompt 2: every sample ties → no pair at all
    text = synthetic_task.prompt_text("train", 2)
    with pytest.raises(NoPairError, match=rf"train prompt 2 '{text}': all 4 reference samples .* same reward 0.25"):
        make_pairs(t, synthetic_task.train_prompts, 4, 2, seed=shifted(0), pad_id=0,
                   prompt_text=lambda i: synthetic_task.prompt_text("train", i))
