"""The synthetic task's gold reward (task.gold, vbon_exp/tasks/synthetic.py) and its exact gold values and curves
(vbon_exp/tasks/synthetic_oracle.py, vbon_exp/tasks/synthetic_gold.py): the gold reward is the proxy plus the stated
perturbation and over-optimising the proxy costs gold at the default size; the oracle's gold metrics against brute
force; each gold curve's points against the oracle's metrics of the same distribution; the soft-BoN curves (soft-BoN
runs only) and their coarser quadrature; every run's results line carries the exact gold columns. All exact:
tolerances are float64 round-off unless stated."""

from __future__ import annotations

import pytest
import torch
from conftest import build_synthetic, compose_config, run_point

from vbon_exp import bon
from vbon_exp.bon_relatives import best_of_poisson_log_probs, soft_bon_log_probs
from vbon_exp.config import validate
from vbon_exp.errors import ConfigError
from vbon_exp.tasks.synthetic import SyntheticSpec, gold_perturbation
from vbon_exp.tasks.synthetic_gold import SOFT_BON_STEP, gold_curves

SHORT = {"response_length": 3, "init_std": 0.1}  # 216 responses per prompt


@pytest.fixture(scope="module")
def short_task(artifacts_dir):
    return build_synthetic(artifacts_dir, **SHORT)


def test_gold_is_the_proxy_plus_the_sized_perturbation(artifacts_dir, short_task):
    oracle = short_task.oracle
    spec = oracle.spec
    assert isinstance(spec, SyntheticSpec)
    perturbation = gold_perturbation(spec, 1)
    prompt_last = torch.tensor([p[-1] for p in oracle.prompts])
    scores = torch.stack([perturbation.score_ids(prompt_last[i].expand(oracle.num_responses), oracle.responses)
                          for i in range(len(oracle.prompts))])
    expected = oracle.rewards + 0.5 * (scores - oracle.rewards.clamp(min=0) ** 2 / 2)  # the default size 0.5
    torch.testing.assert_close(oracle.gold_rewards, expected, rtol=0, atol=1e-12)
    assert 0.5 < float(scores.std()) < 2.0  # the proxy's scale (std ≈ 1)
    correlation = torch.corrcoef(torch.stack([oracle.rewards.flatten(), scores.flatten()]))[0, 1]
    assert abs(float(correlation)) < 0.3  # its own table, not the proxy's
    twice = build_synthetic(artifacts_dir, gold=1.0, **SHORT).oracle
    torch.testing.assert_close(twice.gold_rewards - twice.rewards, 2 * (expected - oracle.rewards), rtol=0, atol=1e-12)
    off = build_synthetic(artifacts_dir, gold=0.0, **SHORT).oracle
    assert torch.equal(off.gold_rewards, off.rewards)


def test_gold_metrics_against_brute_force(short_task):
    """exact_gold_reward = Σ π·gold and exact_gold_win_rate = P(gold(y) > gold(y′)) + ½·P(=) for y ~ π, y′ ~ π_ref,
    by the [K, K] comparison table; π_ref's gold win rate is ½ exactly."""
    oracle = short_task.oracle
    logp = oracle.bon_log_probs(4)
    p, ref = logp.exp(), oracle.ref_log_probs.exp()
    gold = oracle.gold_rewards
    beats = (gold[:, :, None] > gold[:, None, :]).double() + 0.5 * (gold[:, :, None] == gold[:, None, :]).double()
    win = float(torch.einsum("pk,pkj,pj->p", p, beats, ref).mean())
    metrics = oracle.metrics(logp)
    assert metrics["exact_gold_win_rate"] == pytest.approx(win, abs=1e-12)
    assert metrics["exact_gold_reward"] == pytest.approx(float((p * gold).sum(-1).mean()), abs=1e-12)
    assert oracle.metrics(oracle.ref_log_probs)["exact_gold_win_rate"] == pytest.approx(0.5, abs=1e-12)


def test_gold_curves_are_the_oracle_metrics_along_each_parameter(short_task):
    oracle = short_task.oracle
    assert set(gold_curves(oracle)) == {"gold_bon", "gold_best_of_poisson", "gold_optimum"}  # every run's
    curves = gold_curves(oracle, "soft_bon")  # a soft-BoN run's: its costly curves too
    assert set(curves) == {"gold_bon", "gold_best_of_poisson", "gold_optimum", "gold_soft_bon_n4",
                           "gold_soft_bon_n16", "gold_soft_bon_n64"}
    checks = (("gold_bon", "n", 7, lambda n: oracle.bon_log_probs(n)),
              ("gold_best_of_poisson", "mu", 9, lambda mu: best_of_poisson_log_probs(oracle.ref_log_probs,
                                                                                     oracle.rewards, mu)),
              ("gold_optimum", "beta", 5, oracle.optimum_log_probs),
              ("gold_soft_bon_n16", "lam", 6, lambda lam: soft_bon_log_probs(oracle.ref_log_probs, oracle.rewards, 16,
                                                                             lam)))
    for name, parameter, i, log_probs in checks:
        curve = curves[name]
        exact = oracle.metrics(log_probs(curve[parameter][i]))
        for key in ("kl", "reward", "win_rate", "gold_reward", "gold_win_rate"):  # soft BoN: a coarser quadrature
            assert curve[key][i] == pytest.approx(exact[f"exact_{key}"], abs=1e-12 if "soft" not in name else 1e-8)
        assert all(b >= a - 1e-9 for a, b in zip(curve["kl"], curve["kl"][1:])), name  # least to most optimised
    assert curves["gold_bon"]["n"][:64] == list(range(1, 65))  # every whole N up to 64


def test_soft_bon_curves_coarse_quadrature_agrees_with_the_oracles():
    """Simpson's step 0.2 (the curves') against 0.05 (the exact values'): a relative 1e-8 on a support like the
    synthetic task's (rewards of std ≈ 1, λ over the curves' range; measured 1e-10 on the synthetic task)."""
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(0.5 * torch.randn(2, 500, generator=g, dtype=torch.float64), -1)
    rewards = torch.randn(2, 500, generator=g, dtype=torch.float64)
    for lam in (0.1, 0.3, 3.0, 10.0):
        coarse = soft_bon_log_probs(logp, rewards, 16, lam, step=SOFT_BON_STEP).exp()
        fine = soft_bon_log_probs(logp, rewards, 16, lam, step=0.05).exp()
        torch.testing.assert_close(coarse, fine, rtol=1e-8, atol=0)


def test_over_optimising_the_proxy_costs_gold_on_the_default_task(artifacts_dir):
    """On the default synthetic task (task.gold = 0.5) the gold reward peaks inside every curve's grid (BoN,
    Best-of-Poisson, π*_β) while the proxy keeps rising: the over-optimisation HedgeTune hedges against, by
    construction (the gold falls past r = 1/0.5 = 2, which π_ref's top responses exceed)."""
    import time

    oracle = build_synthetic(artifacts_dir, init_std=0.1).oracle
    start = time.perf_counter()
    curves = gold_curves(oracle)
    print(f"every run's gold curves: {time.perf_counter() - start:.2f} s")
    for name, curve in curves.items():
        best = max(range(len(curve["gold_reward"])), key=curve["gold_reward"].__getitem__)
        assert 0 < best < len(curve["gold_reward"]) - 1, name
        assert curve["gold_reward"][-1] < curve["gold_reward"][best] - 0.05, name
        assert curve["reward"][-1] > curve["reward"][best], name


def test_gold_seed_must_differ_from_the_reward_seed(tmp_path):
    with pytest.raises(ConfigError, match="task.gold_seed=0 equals task.reward_seed"):
        validate(compose_config(tmp_path, ["task.gold_seed=0"]))
    assert validate(compose_config(tmp_path, ["task.gold_seed=0", "task.gold=0"])).task.gold == 0


def test_results_lines_carry_the_exact_gold_values(tmp_path):
    line = run_point(tmp_path, tmp_path / "bon", "objective=bon", "objective.n=4", "eval.bon_pool_m=32",
                     "reference.m=32", "task.response_length=3")
    assert line["exact_gold_reward"] != line["exact_reward"] and 0.5 < line["exact_gold_win_rate"] < 1
    assert bon.kl_bon_analytic(4) >= line["exact_kl"] > 0
