"""vbon_exp/evaluation/inference_bon.py (`eval.inference_n`): every sampled policy under inference-time BoN_N′.

- The pool estimators equal their definitions, averages over every N′-subset of both pools, enumerated by brute force
  on small pools with ties (to 1e-12), and the subset-count ratio equals math.comb's.
- The exact values equal brute-force enumeration of N′-tuples on a small distribution with ties (to 1e-12); at
  N′ = 1 they are the oracle's exact reward and win rate; for π_θ = π_ref the exact inference-time win rate is ½
  at every N′, ties included (the tied synthetic task).
- On the synthetic task the estimates agree with the exact values: π_θ = π_ref within 3 SE of ½ (the issue's
  tolerance), and a perturbed policy's every metric within 4 SE (12 comparisons: at 4 SE a correct estimator fails
  one with probability ≈ 12·6e-5 < 1e-3, for any seed shift; the SE is the bootstrap's, which covers both pools).
- The settings: bad N′ lists fail in `check`, naming the key; a run writes the columns for a sampled policy and
  none for BoN from the pool.
"""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import pytest
import torch
from conftest import SHORT_RESPONSES, perturbed, run_point, shifted

from vbon_exp.errors import ConfigError
from vbon_exp.evaluation import BON_POOL, ModelPolicy, measure
from vbon_exp.evaluation.inference_bon import exact_inference, inference_replicates, subset_fraction
from vbon_exp.reference import task_caches
from vbon_exp.results import INFERENCE_METRICS, RESULTS_FILE, inference_column
from vbon_exp.run import _inference_lines
from vbon_exp.sampling import SamplingConfig
from vbon_exp.settings.eval import EvalConfig
from vbon_exp.settings.reference import ReferenceConfig

SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=5)


def win(a: float, b: float) -> float:
    """a beats b, ties ½."""
    return 1.0 if a > b else 0.5 if a == b else 0.0


# ---------------------------------------------------------------------------------------------------- estimators


def test_subset_fraction_is_the_binomial_ratio():
    for m in range(1, 13):
        for n in range(1, m + 1):
            counts = torch.arange(0, m + 1, dtype=torch.float64)
            expected = [math.comb(int(c), n) / math.comb(m, n) for c in counts]
            assert subset_fraction(counts, n, m).tolist() == pytest.approx(expected, rel=1e-12, abs=0)
    big = float(Fraction(math.comb(900, 300), math.comb(1000, 300)))  # 244-digit integers, exact ratio
    assert float(subset_fraction(torch.tensor([900.0]), 300, 1000)) == pytest.approx(big, rel=1e-9)


def test_pool_estimates_equal_the_average_over_every_subset_of_both_pools():
    """Policy pool K = 6, π_ref's BoN pool M = 7, test cache 5, all with ties; N′ = 1..4: every estimate (row 0,
    no bootstrap) is the average of its kernel over all N′-subsets (and all reference N′-subsets or cache
    samples), enumerated."""
    policy = [0.3, 0.1, 0.3, 0.9, 0.5, 0.2]
    pool = [0.3, 0.2, 0.5, 0.5, 0.0, 0.9, 0.4]
    cache = [0.3, 0.1, 0.6, 0.3, 0.2]
    ns = [1, 2, 3, 4]
    got = inference_replicates(torch.tensor(policy, dtype=torch.float64), torch.zeros(6, dtype=torch.long),
                               [torch.tensor(sorted(pool), dtype=torch.float64)],
                               [torch.tensor(sorted(cache), dtype=torch.float64)], ns, 0, torch.Generator())
    for j, n in enumerate(ns):
        subsets = list(itertools.combinations(policy, n))
        references = list(itertools.combinations(pool, n))
        expected = {
            "reward": sum(max(s) for s in subsets) / len(subsets),
            "worst_reward": sum(min(s) for s in subsets) / len(subsets),
            "win_rate": sum(win(max(s), max(r)) for s in subsets for r in references)
            / (len(subsets) * len(references)),
            "win_rate_vs_ref": sum(win(max(s), c) for s in subsets for c in cache) / (len(subsets) * len(cache)),
        }
        for metric in INFERENCE_METRICS:
            assert got[metric].shape == (1, len(ns))
            assert float(got[metric][0, j]) == pytest.approx(expected[metric], abs=1e-12), (metric, n)


def test_bootstrap_rows_resample_and_the_estimate_is_row_zero():
    g = torch.Generator().manual_seed(shifted(3))
    rewards, pidx = torch.randn(40, generator=g, dtype=torch.float64), torch.arange(2).repeat_interleave(20)
    rows = [torch.randn(30, generator=g, dtype=torch.float64).sort().values for _ in range(2)]
    plain = inference_replicates(rewards, pidx, rows, rows, [1, 4], 0, torch.Generator())
    boot = inference_replicates(rewards, pidx, rows, rows, [1, 4], 50, torch.Generator().manual_seed(0))
    for metric in INFERENCE_METRICS:
        assert boot[metric].shape == (51, 2)
        assert torch.allclose(boot[metric][0], plain[metric][0], rtol=0, atol=1e-12)  # row 0: the data themselves
        assert float(boot[metric][1:].std(0).min()) > 0  # the replicates differ


def test_a_pool_smaller_than_n_is_a_config_error_naming_the_key():
    rows = [torch.arange(3, dtype=torch.float64)]
    with pytest.raises(ConfigError, match="eval.samples_per_prompt"):
        inference_replicates(torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.long), rows, rows, [3],
                             0, torch.Generator())
    with pytest.raises(ConfigError, match="eval.bon_pool_m"):
        inference_replicates(torch.zeros(8, dtype=torch.float64), torch.zeros(8, dtype=torch.long), rows, rows, [4],
                             0, torch.Generator())


# ---------------------------------------------------------------------------------------------------- exact values


def test_exact_values_equal_enumeration_of_every_tuple():
    """Five responses, rewards with ties, two prompts: the exact columns against all N′-tuples of both policies."""
    rewards = torch.tensor([[0.0, 1.0, 1.0, 2.0, 0.5], [3.0, 1.0, 3.0, 3.0, 0.0]], dtype=torch.float64)
    policy = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25], [0.05, 0.4, 0.2, 0.3, 0.05]], dtype=torch.float64)
    reference = torch.tensor([[0.3, 0.1, 0.2, 0.1, 0.3], [0.2, 0.2, 0.2, 0.2, 0.2]], dtype=torch.float64)
    ns = [1, 2, 3]
    got = exact_inference(policy.log(), reference.log(), rewards, ns)
    for n in ns:
        expected = dict.fromkeys(INFERENCE_METRICS, 0.0)
        for p in range(2):
            r, pi, ref = rewards[p].tolist(), policy[p].tolist(), reference[p].tolist()
            for ys in itertools.product(range(5), repeat=n):
                mass = math.prod(pi[y] for y in ys) / 2  # the mean over the two prompts
                best = max(r[y] for y in ys)
                expected["reward"] += mass * best
                expected["worst_reward"] += mass * min(r[y] for y in ys)
                expected["win_rate_vs_ref"] += mass * sum(ref[z] * win(best, r[z]) for z in range(5))
                expected["win_rate"] += mass * sum(math.prod(ref[z] for z in zs) * win(best, max(r[z] for z in zs))
                                                   for zs in itertools.product(range(5), repeat=n))
        for metric in INFERENCE_METRICS:
            assert got[f"exact_{inference_column(metric, n)}"] == pytest.approx(expected[metric], abs=1e-12)


def test_a_response_the_policy_never_draws_keeps_no_mass():
    rewards = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    policy = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64).log()
    got = exact_inference(policy, torch.full((1, 3), 1 / 3, dtype=torch.float64).log(), rewards, [2])
    assert got["exact_inference_reward_2"] == pytest.approx(0.75, abs=1e-15)  # max of two fair {0, 1}
    assert got["exact_inference_worst_reward_2"] == pytest.approx(0.25, abs=1e-15)


def test_best_of_n_prime_of_bon_is_bon_of_the_product(tied_synthetic_task):
    """BoN_N′(BoN_N(π_ref)) = BoN_{N·N′}(π_ref), ties included: the exact columns of BoN_2 at N′ = 4 are π_BoN(8)'s."""
    oracle = tied_synthetic_task.oracle
    got = exact_inference(oracle.bon_log_probs(2), oracle.ref_log_probs, oracle.rewards, [4])
    bon8 = oracle.metrics(oracle.bon_log_probs(8))
    assert got["exact_inference_reward_4"] == pytest.approx(bon8["exact_reward"], abs=1e-12)
    assert got["exact_inference_win_rate_vs_ref_4"] == pytest.approx(bon8["exact_win_rate"], abs=1e-12)


@pytest.mark.parametrize("fixture", ["synthetic_task", "tied_synthetic_task"])
def test_exact_for_the_reference_itself(fixture, request):
    """π_θ = π_ref: BoN_N′(π_ref) against itself wins ½ at every N′, on the peaky task and on the tied one (5
    reward levels: the ½ for ties is what makes it exact); at N′ = 1 every column is the oracle's own."""
    oracle = request.getfixturevalue(fixture).oracle
    ns = [1, 2, 4, 16, 64]
    got = exact_inference(oracle.ref_log_probs, oracle.ref_log_probs, oracle.rewards, ns)
    for n in ns:
        assert got[f"exact_inference_win_rate_{n}"] == pytest.approx(0.5, abs=1e-12), n
        bon = oracle.metrics(oracle.bon_log_probs(n))
        assert got[f"exact_inference_reward_{n}"] == pytest.approx(bon["exact_reward"], abs=1e-12)
        assert got[f"exact_inference_win_rate_vs_ref_{n}"] == pytest.approx(bon["exact_win_rate"], abs=1e-12)
    plain = oracle.metrics(oracle.ref_log_probs)
    assert got["exact_inference_reward_1"] == pytest.approx(plain["exact_reward"], abs=1e-12)
    assert got["exact_inference_worst_reward_1"] == pytest.approx(plain["exact_reward"], abs=1e-12)
    assert got["exact_inference_win_rate_vs_ref_1"] == pytest.approx(plain["exact_win_rate"], abs=1e-12)
    rewards = [got[f"exact_inference_reward_{n}"] for n in ns]
    worst = [got[f"exact_inference_worst_reward_{n}"] for n in ns]
    assert rewards == sorted(rewards) and worst == sorted(worst, reverse=True) and worst[-1] < rewards[-1]


# ---------------------------------------------------------------------------------------------------- on the task


def caches(task, tmp_path, pool_m: int, test_m: int) -> dict:
    return task_caches(task, {"test": test_m, BON_POOL: pool_m}, sampling=SAMPLING, seed=shifted(0),
                       settings=ReferenceConfig(cache_dir=str(tmp_path)))


def test_reference_itself_wins_half_within_three_se(synthetic_task, tmp_path):
    """π_θ = π_ref on the peaky task (its samples repeat: ties in both pools): the estimate of the inference-time
    win rate is within 3 SE of the exact ½ at every N′ (the issue's tolerance)."""
    task = synthetic_task
    ns = [1, 2, 4, 16]
    m = measure(ModelPolicy(task.reference, task, SAMPLING), task, caches(task, tmp_path, 256, 256),
                seed=shifted(0), samples_per_prompt=256, bon_pool_m=256, bootstrap=200, inference_n=ns)[0]
    for n in ns:
        column = f"inference_win_rate_{n}"
        print(f"N′={n}: {m[column]:.4f} ± {m[f'{column}_se']:.4f} (exact {m[f'exact_{column}']})")
        assert m[f"exact_{column}"] == pytest.approx(0.5, abs=1e-12)
        assert 0 < m[f"{column}_se"] < 0.05
        assert abs(m[column] - 0.5) <= 3 * m[f"{column}_se"], (n, m[column], m[f"{column}_se"])
    assert "BoN pool" in m["se_covers"]["inference_win_rate_4_se"]
    assert m["inference_reward_1"] == pytest.approx(m["reward"], abs=1e-12)  # N′ = 1: the policy itself
    assert m["inference_win_rate_vs_ref_1"] == pytest.approx(m["win_rate"], abs=1e-12)


def test_a_perturbed_policy_matches_its_exact_values(synthetic_task, tmp_path):
    """A policy clearly unlike π_ref: every inference-time estimate within 4 SE of its exact value (module
    docstring), at N′ = 1, 4, 16."""
    task = synthetic_task
    policy = ModelPolicy(perturbed(task.reference, 0.3, 123), task, SAMPLING)
    ns = [1, 4, 16]
    m = measure(policy, task, caches(task, tmp_path, 512, 512), seed=shifted(0), samples_per_prompt=512,
                bon_pool_m=512, bootstrap=200, inference_n=ns)[0]
    assert m["exact_kl"] > 0.1  # precondition: not π_ref
    for n in ns:
        for metric in INFERENCE_METRICS:
            column = inference_column(metric, n)
            estimate, se, exact = m[column], m[f"{column}_se"], m[f"exact_{column}"]
            print(f"{column}: {estimate:.4f} ± {se:.4f} (exact {exact:.4f})")
            assert 0 < se < 0.1 and abs(estimate - exact) <= 4 * se, (column, estimate, se, exact)


# ---------------------------------------------------------------------------------------------------- settings, runs


@pytest.mark.parametrize("ns, key", [([0], r"eval.inference_n\[0\]"), ([1.5], r"eval.inference_n\[0\]"),
                                     ([2, 2], "more than once"), ([4, 2], "increasing order"),
                                     ([1, 300], "eval.samples_per_prompt"), ([1, 200], "eval.bon_pool_m")])
def test_bad_inference_n_is_refused_naming_the_key(ns, key):
    with pytest.raises(ConfigError, match=key):
        EvalConfig(samples_per_prompt=256, bon_pool_m=128, inference_n=ns).check()


def test_off_by_default_and_empty_is_off():
    assert EvalConfig().inference_ns() == [] and EvalConfig(inference_n=[]).inference_ns() == []
    EvalConfig(inference_n=[]).check()


def test_a_run_writes_the_columns_for_a_sampled_policy_and_none_for_bon_from_the_pool(tmp_path):
    small = (SHORT_RESPONSES, "reference.m=64", "eval.samples_per_prompt=32", "eval.bon_pool_m=32",
             "eval.bootstrap=20", "eval.inference_n=[1,4]")
    sampled = run_point(tmp_path, tmp_path / "sampled", "objective=bon", "objective.n=2",
                        "objective.estimate=sample", *small)
    for n in (1, 4):
        for metric in INFERENCE_METRICS:
            column = inference_column(metric, n)
            assert math.isfinite(sampled[column]) and sampled[f"{column}_se"] > 0 and f"exact_{column}" in sampled
    line = json.loads((tmp_path / "sampled" / RESULTS_FILE).read_text().splitlines()[0])
    assert line["inference_win_rate_4"] == sampled["inference_win_rate_4"]
    assert sampled["exact_inference_reward_1"] == pytest.approx(sampled["exact_reward"], abs=1e-12)
    printed = _inference_lines(sampled)  # the run's summary: one line per N′, each value beside its exact value
    assert [line.split(" at inference")[0].strip() for line in printed] == ["best-of-1", "best-of-4"]
    assert f"{sampled['inference_win_rate_4']:.4f}" in printed[1] and printed[1].count("(exact ") == 2
    pooled = run_point(tmp_path, tmp_path / "pooled", "objective=bon", "objective.n=2", *small)
    assert not any(key.startswith(("inference_", "exact_inference_")) for key in pooled)
