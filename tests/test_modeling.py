"""vbon_exp/modeling.py: position ids from masks, Samples.select / .to, response_logits against a manual forward
pass, and the pad-id rules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vbon_exp.modeling import Samples, pad_token_id, positions_from_mask, response_logits

PAD_GARBAGE = 5  # a real token id in the padding slots: anything that ignores the masks picks it up


def padded_pairs(task) -> tuple[Samples, list[tuple[list[int], list[int]]]]:
    """Four pairs of the synthetic task with different real lengths: prompts left-padded to 3, responses right-padded
    to 5, padding filled with a real token id."""
    p = task.train_prompts
    pairs = [(p[0], [0, 1, 2, 3, 4]), (p[1][1:], [3, 3, 1]), (p[2], [5, 0, 2, 1]), (p[3][1:], [2])]
    prompt_ids, prompt_mask = torch.full((4, 3), PAD_GARBAGE), torch.zeros(4, 3, dtype=torch.long)
    response_ids, response_mask = torch.full((4, 5), PAD_GARBAGE), torch.zeros(4, 5, dtype=torch.long)
    for i, (prompt, response) in enumerate(pairs):
        prompt_ids[i, 3 - len(prompt):], prompt_mask[i, 3 - len(prompt):] = torch.tensor(prompt), 1
        response_ids[i, : len(response)], response_mask[i, : len(response)] = torch.tensor(response), 1
    return Samples(torch.arange(4), prompt_ids, prompt_mask, response_ids, response_mask), pairs


def manual_log_dists(model, prompt, response, temperature) -> torch.Tensor:
    """One unpadded forward pass with the model's default positions: log softmax(logits / T) at the positions that
    predict the response tokens, [len(response), V]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
    start = len(prompt) - 1
    return torch.log_softmax(logits[start : start + len(response)].double() / temperature, dim=-1)


# --------------------------------------------------------------------------- positions_from_mask


def test_positions_from_mask_counts_real_tokens_from_zero():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 1, 1, 1, 0]])
    pos = positions_from_mask(mask)
    assert pos.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0], [0, 0, 1, 2, 2]]
    assert pos.dtype == torch.long
    for row, m in zip(pos, mask):  # real tokens get 0, 1, 2, ... whatever the padding around them
        assert row[m.bool()].tolist() == list(range(int(m.sum())))
    assert positions_from_mask(mask.bool()).tolist() == pos.tolist()  # bool masks too


# --------------------------------------------------------------------------- Samples


def _samples(rewards=True, extras=True) -> Samples:
    return Samples(
        prompt_index=torch.tensor([3, 1, 2]),
        prompt_ids=torch.tensor([[0, 7], [8, 9], [0, 6]]),
        prompt_mask=torch.tensor([[0, 1], [1, 1], [0, 1]]),
        response_ids=torch.tensor([[1, 2, 0], [3, 0, 0], [4, 5, 6]]),
        response_mask=torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]),
        rewards=torch.tensor([0.5, -1.0, 2.0]) if rewards else None,
        extras={"logp_ref": torch.tensor([-1.0, -2.0, -3.0])} if extras else {},
    )


def test_samples_select_picks_the_same_rows_of_every_field():
    s = _samples()
    picked = s.select(torch.tensor([2, 0]))
    assert picked.prompt_index.tolist() == [2, 3]
    assert picked.prompt_ids.tolist() == [[0, 6], [0, 7]] and picked.prompt_mask.tolist() == [[0, 1], [0, 1]]
    assert picked.response_ids.tolist() == [[4, 5, 6], [1, 2, 0]]
    assert picked.response_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert picked.rewards.tolist() == [2.0, 0.5] and picked.extras["logp_ref"].tolist() == [-3.0, -1.0]
    assert picked.response_lengths.tolist() == [3, 2] and len(picked) == 2
    sliced = s.select(slice(1, 3))
    assert sliced.prompt_index.tolist() == [1, 2] and sliced.rewards.tolist() == [-1.0, 2.0]
    assert s.select(torch.tensor([True, False, True])).prompt_index.tolist() == [3, 2]
    unscored = _samples(rewards=False, extras=False).select(torch.tensor([1]))
    assert unscored.rewards is None and unscored.extras == {}


def test_samples_to_moves_every_tensor_and_keeps_none():
    s = _samples()
    moved = s.to("meta")
    tensors = [moved.prompt_index, moved.prompt_ids, moved.prompt_mask, moved.response_ids, moved.response_mask,
               moved.rewards, *moved.extras.values()]
    assert all(t.device.type == "meta" for t in tensors)
    assert [t.shape for t in tensors] == [t.shape for t in (s.prompt_index, s.prompt_ids, s.prompt_mask,
                                                             s.response_ids, s.response_mask, s.rewards,
                                                             *s.extras.values())]
    assert s.prompt_ids.device.type == "cpu"  # a new object; the original stays where it was
    assert _samples(rewards=False).to("meta").rewards is None


# --------------------------------------------------------------------------- forward passes


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logits_match_a_manual_unpadded_forward(synthetic_task, temperature):
    """[B, Lr, V] log-softmax of logits / T, row i position t predicting response token t. Compared on real tokens
    with one unpadded forward per pair; tolerance 5e-5 (float32, padded batch vs single unpadded pass: measured
    ≤ 5e-6 on these log-probs of magnitude up to ~20; a misaligned position or a wrong temperature moves them by
    > 0.1)."""
    model = synthetic_task.reference
    samples, pairs = padded_pairs(synthetic_task)
    out = response_logits(model, samples, temperature)
    assert out.shape == (4, 5, 6) and out.dtype == torch.float32
    for i, (prompt, response) in enumerate(pairs):
        expected = manual_log_dists(model, prompt, response, temperature)
        got = out[i, : len(response)].double()
        assert torch.allclose(got, expected, atol=5e-5, rtol=0), (i, (got - expected).abs().max())
    # the distributions are normalised at every position, padding included (it is masked later, not here)
    assert torch.allclose(out.exp().sum(-1), torch.ones(4, 5), atol=1e-5)


# --------------------------------------------------------------------------- pad ids


@pytest.mark.parametrize(
    ("pad", "eos", "expected"),
    [(3, 9, 3),  # the tokenizer's pad token
     (None, 9, 9),  # GPT-2 style: no pad token, EOS instead
     (0, 9, 0),  # id 0 is a valid pad id, not "missing"
     (None, 0, 0),
     (None, None, 0)],  # neither: 0 (padding is tracked by masks, any in-vocabulary id works)
)
def test_pad_token_id_rules(pad, eos, expected):
    assert pad_token_id(SimpleNamespace(pad_token_id=pad, eos_token_id=eos)) == expected


def test_pad_token_id_of_real_tokenizers(synthetic_task):
    from vbon_exp import tiny

    with_pad = tiny.train_tokenizer(["a tiny corpus for a tiny tokenizer"] * 4, vocab_size=300)
    assert pad_token_id(with_pad) == with_pad.pad_token_id == with_pad.convert_tokens_to_ids(tiny.PAD)
    assert with_pad.pad_token_id != with_pad.eos_token_id  # precondition: the rule, not a coincidence, picks pad
    without = synthetic_task.tokenizer  # word-level symbols, no special tokens at all
    assert without.pad_token_id is None and without.eos_token_id is None
    assert pad_token_id(without) == 0
