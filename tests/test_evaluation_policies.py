"""vbon_exp/evaluation/{model,bon_sampled,statistics}.py: ModelPolicy.kl_terms against a brute-force per-sequence computation, BoNPolicy's choice of
the best sample of each group, and the stratified mean / standard error. All checks are deterministic."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import perturbed, seeded

from vbon_exp.evaluation import BoNPolicy, ModelPolicy, stratified_mean_se
from vbon_exp.modeling import Samples
from vbon_exp.reference import ReferenceCache
from vbon_exp.sampling import SamplingConfig

PAD_GARBAGE = 5  # a real token id in the padding slots: anything that ignores the masks picks it up


@pytest.fixture(scope="module")
def perturbed_model(synthetic_task):
    """π_ref (the synthetic 2-layer GPT-2) with fixed-seed Gaussian noise (std 0.03) on every weight."""
    return perturbed(synthetic_task.reference, 0.03, 11)


def padded_samples(task) -> tuple[Samples, list[tuple[list[int], list[int]]]]:
    """Four (prompt, response) pairs with different real lengths, left-padded prompts and right-padded responses whose
    padding holds a real token id; also the unpadded pairs."""
    p = task.train_prompts
    pairs = [(p[0], [0, 1, 2, 3, 4]), (p[1][1:], [3, 3, 1]), (p[2], [5, 0, 2, 1]), (p[3][1:], [2])]
    lp, lr = 3, 5
    prompt_ids = torch.full((4, lp), PAD_GARBAGE)
    prompt_mask = torch.zeros(4, lp, dtype=torch.long)
    response_ids = torch.full((4, lr), PAD_GARBAGE)
    response_mask = torch.zeros(4, lr, dtype=torch.long)
    for i, (prompt, response) in enumerate(pairs):
        prompt_ids[i, lp - len(prompt):] = torch.tensor(prompt)
        prompt_mask[i, lp - len(prompt):] = 1
        response_ids[i, : len(response)] = torch.tensor(response)
        response_mask[i, : len(response)] = 1
    return Samples(torch.arange(4), prompt_ids, prompt_mask, response_ids, response_mask), pairs


def brute_force_log_dists(model, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    """log softmax(logits / T) predicting each response token, from one unpadded forward pass: [len(response), V]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0].double()
    start = len(prompt) - 1
    return torch.log_softmax(logits[start : start + len(response)] / temperature, dim=-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_model_policy_kl_terms_match_brute_force(synthetic_task, perturbed_model, temperature):
    """full = Σ_t Σ_v p(v)·log(p(v)/q(v)); k1 = Σ_t log p(y_t)/q(y_t); k3 = (ρ − 1) − log ρ, ρ = exp(−k1); each
    per sequence over its real tokens only. The brute force runs each pair unpadded, one at a time, in float64 after
    the logits; kl_terms runs padded batches in float32. Measured differences ≤ 5e-6 (float32 log-softmax of this
    peaky model's logits, summed over ≤ 5 tokens); tolerance 5e-5. The values are O(0.01–3), and a mask, temperature
    or alignment bug moves them by > 1e-2."""
    samples, pairs = padded_samples(synthetic_task)
    policy = ModelPolicy(perturbed_model, synthetic_task, SamplingConfig(temperature=temperature, max_new_tokens=5))
    terms = policy.kl_terms(samples, batch_size=3)  # two batches of unequal size
    full, k1 = [], []
    for prompt, response in pairs:
        logp = brute_force_log_dists(perturbed_model, prompt, response, temperature)
        logq = brute_force_log_dists(synthetic_task.reference, prompt, response, temperature)
        full.append(float((logp.exp() * (logp - logq)).sum()))
        tok = torch.tensor(response)[:, None]
        k1.append(float((logp.gather(-1, tok) - logq.gather(-1, tok)).sum()))
    full_t, k1_t = torch.tensor(full, dtype=torch.float64), torch.tensor(k1, dtype=torch.float64)
    assert set(terms) == {"full", "k1", "k3"} and all(t.dtype == torch.float64 for t in terms.values())
    assert torch.allclose(terms["full"], full_t, atol=5e-5, rtol=0), (terms["full"], full_t)
    assert torch.allclose(terms["k1"], k1_t, atol=5e-5, rtol=0), (terms["k1"], k1_t)
    assert torch.allclose(terms["k3"], torch.expm1(-k1_t) + k1_t, atol=5e-5, rtol=1e-4)
    assert (terms["full"] > 1e-3).all() and (terms["k3"] >= 0).all()  # precondition: the policies differ
    assert terms["k1"].abs().max() > 1e-2


def test_model_policy_kl_terms_vanish_for_the_reference_itself(synthetic_task):
    samples, _ = padded_samples(synthetic_task)
    terms = ModelPolicy(synthetic_task.reference, synthetic_task, SamplingConfig(max_new_tokens=5)).kl_terms(samples)
    for name, values in terms.items():
        assert torch.equal(values, torch.zeros(4, dtype=torch.float64)), name


class StubReference:
    """Stands in for the reference ModelPolicy: returns a pool with fixed rewards, rows grouped by prompt."""

    def __init__(self, rewards: list[float]):
        self.rewards = torch.tensor(rewards)
        self.calls: list[tuple[int, int]] = []

    def sample(self, prompts, n, generator, desc=None):
        self.calls.append((len(prompts), n))
        rows = len(prompts) * n
        assert rows == len(self.rewards)
        prompt_ids = torch.tensor(prompts).repeat_interleave(n, dim=0)
        response_ids = torch.arange(rows)[:, None]  # each row's response names its row
        return Samples(torch.arange(len(prompts)).repeat_interleave(n), prompt_ids, torch.ones_like(prompt_ids),
                       response_ids, torch.ones_like(response_ids), rewards=self.rewards.clone())


def test_bon_policy_keeps_the_argmax_of_each_group_first_on_ties():
    """2 prompts × 2 outputs × N = 3: groups of 3 consecutive pool rows, best reward kept (first of equal ones)."""
    rewards = [0.1, 0.5, 0.2] + [0.9, 0.9, -1.0] + [-3.0, -2.0, -1.0] + [0.0, 0.0, 0.0]  # four groups of N = 3
    reference = StubReference(rewards)
    out = BoNPolicy(reference, 3).sample([[7, 8], [9, 10]], 2, generator=None)
    assert reference.calls == [(2, 6)]  # one pool of n·N per prompt
    assert out.response_ids[:, 0].tolist() == [1, 3, 8, 9]
    assert out.rewards.tolist() == pytest.approx([0.5, 0.9, -1.0, 0.0])
    assert out.prompt_index.tolist() == [0, 0, 1, 1]
    assert out.prompt_ids.tolist() == [[7, 8], [7, 8], [9, 10], [9, 10]]


def test_bon_policy_on_the_synthetic_task_keeps_the_best_of_its_pool(synthetic_task):
    """With the same generator seed, BoN(N=4) returns the best of each group of 4 consecutive reference draws."""
    reference = ModelPolicy(synthetic_task.reference, synthetic_task, SamplingConfig(max_new_tokens=5))
    prompts, n, big_n = synthetic_task.train_prompts, 3, 4
    pool = reference.sample(prompts, n * big_n, seeded(5))
    out = BoNPolicy(reference, big_n).sample(prompts, n, seeded(5))
    groups = pool.rewards.view(-1, big_n)
    assert torch.equal(out.rewards, groups.max(-1).values)
    best_rows = groups.argmax(-1) + torch.arange(len(groups)) * big_n
    assert torch.equal(out.response_ids, pool.response_ids[best_rows])
    assert out.prompt_index.tolist() == [i for i in range(len(prompts)) for _ in range(n)]
    assert not torch.equal(out.rewards, groups[:, 0])  # precondition: selection is not the identity


def test_bon_policy_k1_is_tie_aware():
    """A reward the cache does not hold: log N + (N−1)·log F̂, F̂ = (#< + 1)/(M + 1); one it holds (a tie):
    log((F^N − F⁻^N)/q) with the cache's F = #≤/M, F⁻ = #</M, q = F − F⁻, by hand."""
    cache = ReferenceCache.from_rows([torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 1.0, 5.0])])
    samples = Samples(torch.tensor([0, 0, 1, 1]), *(torch.zeros(4, 1, dtype=torch.long),) * 4,
                      rewards=torch.tensor([2.5, -1.0, 1.0, 5.0]))
    k1 = BoNPolicy(StubReference([]), 4).kl_terms(samples, cache)["k1"]
    expected = [math.log(4) + 3 * math.log(4 / 5), math.log(4) + 3 * math.log(1 / 5),
                math.log((0.75**4 - 0.25**4) / 0.5), math.log((1 - 0.75**4) / 0.25)]
    assert k1.tolist() == pytest.approx(expected, abs=1e-12)
    assert BoNPolicy(StubReference([]), 1).analytic_kl() == 0.0


def test_stratified_mean_se_by_hand_with_interleaved_unequal_groups():
    """Groups 5: {2, 4, 9} (mean 5, var 13) and 2: {1, 3} (mean 2, var 2); mean of means 3.5 (the pooled mean, 3.8,
    would be wrong); SE = √(13/3 + 2/2) / 2."""
    values = torch.tensor([2.0, 1.0, 4.0, 3.0, 9.0])
    groups = torch.tensor([5, 2, 5, 2, 5])
    mean, se = stratified_mean_se(values, groups)
    assert mean == pytest.approx(3.5, abs=1e-12)
    assert se == pytest.approx(math.sqrt(13 / 3 + 2 / 2) / 2, abs=1e-12)


def test_stratified_mean_se_single_sample_group_has_no_standard_error():
    mean, se = stratified_mean_se(torch.tensor([1.0, 3.0, 10.0]), torch.tensor([0, 0, 1]))
    assert mean == pytest.approx(6.0) and math.isnan(se)
