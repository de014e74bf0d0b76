"""vbon_exp/rewards.py: VaderReward (the offline sentiment reward) and `score`'s batching.

Expected values come from vaderSentiment's analyzer run on the original strings, so each check pins down which text
the reward reads (prompt + response or the response alone, padding never) as well as the direction of the score."""

from __future__ import annotations

import pytest
import torch
from tiny_artifacts import corpus
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # a required dependency: no skip if missing

from vbon_exp import tiny
from vbon_exp.modeling import Samples
from vbon_exp.rewards import VaderReward, VaderRewardConfig, score

POSITIVE = "This movie was wonderful, I loved it."
NEGATIVE = "A terrible, awful film. I hated it."


@pytest.fixture(scope="module")
def tokenizer():
    """The tests' byte-level BPE tokenizer (trained on tiny_artifacts' corpus); it round-trips any text."""
    return tiny.train_tokenizer(corpus(), vocab_size=300)


@pytest.fixture(scope="module")
def analyzer():
    return SentimentIntensityAnalyzer()


def vader(analyzer, text: str) -> float:
    return analyzer.polarity_scores(text)["compound"]


def make_samples(tokenizer, pairs: list[tuple[str, str]]) -> Samples:
    """Left-padded prompts and right-padded responses; the padding holds the tokens of a strongly negative phrase,
    so a reward that read past the masks would score differently."""
    garbage = tokenizer(" hated it, terrible awful", add_special_tokens=False).input_ids
    enc = [(tokenizer(p, add_special_tokens=False).input_ids, tokenizer(r, add_special_tokens=False).input_ids)
           for p, r in pairs]
    for (p_ids, r_ids), (p, r) in zip(enc, pairs):  # precondition: the texts survive tokenization
        assert tokenizer.decode(p_ids + r_ids) == p + r and tokenizer.decode(r_ids) == r
    lp = max(len(p) for p, _ in enc) + len(garbage)  # every row has at least the whole phrase as padding
    lr = max(len(r) for _, r in enc) + len(garbage)
    rows = []
    for p_ids, r_ids in enc:
        left, right = lp - len(p_ids), lr - len(r_ids)
        rows.append(((garbage * left)[:left] + p_ids, [0] * left + [1] * len(p_ids),
                     r_ids + (garbage * right)[:right], [1] * len(r_ids) + [0] * right))
    prompt_ids, prompt_mask, response_ids, response_mask = (torch.tensor(list(col)) for col in zip(*rows))
    return Samples(torch.arange(len(pairs)), prompt_ids, prompt_mask, response_ids, response_mask)


def test_vader_scores_a_positive_text_above_a_negative_one(tokenizer, analyzer):
    reward = VaderReward(VaderRewardConfig(with_prompt=False), policy_tokenizer=tokenizer)
    r = reward(make_samples(tokenizer, [("Review:", " " + POSITIVE), ("Review:", " " + NEGATIVE)]))
    assert r.dtype == torch.float32 and r.shape == (2,)
    assert r[0] > 0.5 and r[1] < -0.5, r
    expected = torch.tensor([vader(analyzer, " " + POSITIVE), vader(analyzer, " " + NEGATIVE)])
    assert torch.allclose(r, expected, atol=1e-6, rtol=0)  # float32 of the analyzer's float
    assert reward.name == "vader"


def test_vader_with_prompt_on_and_off_scores_different_texts(tokenizer, analyzer):
    """A negative prompt with a positive response: with the prompt the compound is negative, without it positive."""
    prompt, response = "I hated this movie.", " It was great!"
    samples = make_samples(tokenizer, [(prompt, response)])
    with_prompt = VaderReward(VaderRewardConfig(with_prompt=True), policy_tokenizer=tokenizer)
    without = VaderReward(VaderRewardConfig(with_prompt=False), policy_tokenizer=tokenizer)
    r_with, r_without = float(with_prompt(samples)[0]), float(without(samples)[0])
    assert r_with == pytest.approx(vader(analyzer, prompt + response), abs=1e-6)
    assert r_without == pytest.approx(vader(analyzer, response), abs=1e-6)
    assert r_with < 0 < r_without  # precondition: the two texts really score differently
    assert with_prompt.fingerprint != without.fingerprint  # cached rewards of one are never reused for the other


def test_vader_ignores_padding(tokenizer, analyzer):
    """Precondition of the other checks: the garbage in the padding would change the score if it were read."""
    samples = make_samples(tokenizer, [("", " It was fine.")])
    r = float(VaderReward(VaderRewardConfig(with_prompt=True), policy_tokenizer=tokenizer)(samples)[0])
    assert r == pytest.approx(vader(analyzer, " It was fine."), abs=1e-6)
    everything = tokenizer.decode(samples.prompt_ids[0].tolist() + samples.response_ids[0].tolist())
    assert abs(vader(analyzer, everything) - r) > 0.3


@pytest.mark.parametrize("with_prompt", [True, False])
def test_score_in_batches_equals_one_unbatched_call(tokenizer, analyzer, with_prompt):
    """`score` sorts rows by length and scores them in batches; the rewards must come back identical and in the
    rows' order, whatever the batch size."""
    pairs = [("Review:", " " + POSITIVE), ("I hated this movie.", " It was great!"), ("", " Meh."),
             ("What a film.", " " + NEGATIVE + " " + NEGATIVE), ("Great cast.", " Boring."),
             ("The ending", " was beautiful and moving, a wonderful surprise.")]
    samples = make_samples(tokenizer, pairs)
    reward = VaderReward(VaderRewardConfig(with_prompt=with_prompt), policy_tokenizer=tokenizer)
    unbatched = reward(samples)
    lengths = samples.prompt_mask.sum(-1) + samples.response_mask.sum(-1)
    assert not torch.equal(torch.argsort(lengths, stable=True), torch.arange(len(pairs)))  # sorting reorders rows
    for batch_size in (1, 2, 4, 256):
        assert torch.equal(score(reward, samples, batch_size=batch_size), unbatched), batch_size
    expected = torch.tensor([vader(analyzer, (p if with_prompt else "") + r) for p, r in pairs])
    assert torch.allclose(unbatched, expected, atol=1e-6, rtol=0)
    assert len(set(unbatched.tolist())) == len(pairs)  # distinct values: a row mix-up cannot go unnoticed


# --------------------------------------------------------------------------- classifier outputs (reward.output)


def test_classifier_outputs_are_the_probability_the_logit_and_the_margin_of_the_class():
    from vbon_exp.rewards import CLASSIFIER_OUTPUTS

    logits = torch.tensor([[0.5, 2.0, -1.0], [3.0, -2.0, 0.0]])
    p = torch.softmax(logits, -1)
    assert torch.allclose(CLASSIFIER_OUTPUTS["prob"](logits, 1), p[:, 1])
    assert torch.equal(CLASSIFIER_OUTPUTS["logit"](logits, 1), logits[:, 1])
    assert torch.allclose(CLASSIFIER_OUTPUTS["margin"](logits, 1), torch.tensor([2.0 - 0.5, -2.0 - 3.0]))
    two = logits[:, :2]  # two classes: the margin is the log-odds log p/(1 − p)
    q = CLASSIFIER_OUTPUTS["prob"](two, 1)
    assert torch.allclose(CLASSIFIER_OUTPUTS["margin"](two, 1), torch.log(q / (1 - q)), atol=1e-6)
    # prob is monotone in the margin, not in the logit: the logit can order two texts the other way
    a, b = torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 2.0]])
    assert CLASSIFIER_OUTPUTS["logit"](a, 1) < CLASSIFIER_OUTPUTS["logit"](b, 1)
    assert CLASSIFIER_OUTPUTS["prob"](a, 1) > CLASSIFIER_OUTPUTS["prob"](b, 1)


@pytest.mark.parametrize("output", ["prob", "margin"])
def test_a_one_logit_reward_head_takes_only_the_logit(output):
    from vbon_exp.errors import ConfigError
    from vbon_exp.rewards import ClassifierRewardConfig

    with pytest.raises(ConfigError, match=r"reward\.output"):
        ClassifierRewardConfig(name_or_path="x", label=None, output=output).check()
    ClassifierRewardConfig(name_or_path="x", label=None, output="logit").check()
    with pytest.raises(ConfigError, match=r"reward\.output"):
        ClassifierRewardConfig(name_or_path="x", label="POSITIVE", output="softmax").check()
