"""vbon_exp/tasks/synthetic.py: the exactly solvable task, its oracle, and the samplers checked against it.

Sampler tests are chi-square goodness-of-fit tests (tests/stats_helpers.py): all draws come from fixed-seed
torch.Generators, so each p-value is a deterministic number; the bar p > 1e-3 would reject a correct sampler for
only 1 in 1000 seeds. Each test also shows the same samples reject a slightly wrong distribution (p < 1e-6), so
the goodness-of-fit check has power and can fail. Measured at these seeds (pooled over 4 prompts): BoN-4 p = 0.027
(default task) and 0.93 (flat), π_ref p = 0.31 (T = 1) and 0.79 (T = 0.7), top-3 p = 0.87.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import seeded
from stats_helpers import binned_chisquare

from vbon_exp import bon
from vbon_exp.evaluation import BoNPolicy, ModelPolicy
from vbon_exp.sampling import SamplingConfig

N_KL = (2, 4, 16, 64)


@pytest.fixture(params=["synthetic_task", "flat_synthetic_task"], ids=["default", "flat"])
def any_task(request):
    return request.getfixturevalue(request.param)


def test_reference_is_normalised_per_prompt(any_task):
    oracle = any_task.oracle
    assert oracle.ref_log_probs.shape == (4, 6**5)
    total = oracle.ref_log_probs.exp().sum(-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-9, rtol=0)


def test_rewards_are_almost_all_distinct(any_task):
    oracle = any_task.oracle
    for i in range(oracle.rewards.shape[0]):
        assert torch.unique(oracle.rewards[i]).numel() >= 0.999 * oracle.num_responses
    # float32 values, as the pipeline sees them
    assert torch.equal(oracle.rewards, oracle.rewards.float().double())


def test_oracle_rewards_match_the_task_reward(synthetic_task):
    """The enumeration's rewards are exactly what the task's reward model gives the same (prompt, response)."""
    oracle = synthetic_task.oracle
    for i in range(len(oracle.prompts)):
        pairs = oracle.all_pairs(i)
        assert torch.equal(synthetic_task.reward(pairs).double(), oracle.rewards[i])


def test_index_of_inverts_the_enumeration(synthetic_task):
    oracle = synthetic_task.oracle
    pairs = oracle.all_pairs(2)
    assert torch.equal(oracle.index_of(pairs), torch.arange(oracle.num_responses))


def test_build_is_deterministic_from_the_spec(synthetic_task, tmp_path):
    """Rebuilding the artifacts from scratch (a fresh cache dir) gives the same prompts, weights and rewards."""
    from conftest import build_synthetic

    again = build_synthetic(tmp_path)
    assert again.test_prompts == synthetic_task.test_prompts
    assert again.fingerprint["reward"] == synthetic_task.fingerprint["reward"]
    assert again.fingerprint["reference"] == synthetic_task.fingerprint["reference"]
    assert torch.equal(again.oracle.rewards, synthetic_task.oracle.rewards)
    assert torch.equal(again.oracle.ref_log_probs, synthetic_task.oracle.ref_log_probs)


def test_reward_levels_round_the_table_reward(flat_synthetic_task, tied_synthetic_task):
    """`task.reward_levels=5`: each reward is the nearest of −2, −1, 0, 1, 2 to the table reward (clamped), the
    weights and prompts are the same task's, and the reward's fingerprint (the caches' key) changes; 0 (the default)
    leaves the reward and its fingerprint as they were."""
    continuous, tied = flat_synthetic_task, tied_synthetic_task
    grid = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    nearest = grid[(continuous.oracle.rewards.clamp(-2, 2)[..., None] - grid).abs().argmin(-1)]
    assert torch.equal(tied.oracle.rewards, nearest)
    assert sorted(torch.unique(tied.oracle.rewards).tolist()) == grid.tolist()  # every level is used
    assert tied.fingerprint["reference"] == continuous.fingerprint["reference"]
    assert tied.fingerprint["reward"] == continuous.fingerprint["reward"] + ":levels5"
    assert ":levels" not in continuous.fingerprint["reward"]
    pairs = tied.oracle.all_pairs(1)
    assert torch.equal(tied.reward(pairs).double(), tied.oracle.rewards[1])  # the task's reward, not only the oracle


def test_flat_fixture_precondition(flat_synthetic_task):
    assert flat_synthetic_task.oracle.ref_log_probs.exp().max().item() <= 1e-3


@pytest.mark.parametrize("n", N_KL)
def test_exact_bon_kl_never_exceeds_the_continuous_formula(any_task, n):
    """KL(π_BoN‖π_ref) ≤ log N − (N−1)/N for discrete rewards (Beirami et al. 2024), per prompt."""
    oracle = any_task.oracle
    kl = bon.kl(oracle.bon_log_probs(n), oracle.ref_log_probs)
    assert (kl <= bon.kl_bon_analytic(n) + 1e-9).all(), kl


@pytest.mark.parametrize("n", (2, 4, 16))
def test_exact_bon_kl_is_close_to_the_formula_on_a_flat_reference(flat_synthetic_task, n):
    oracle = flat_synthetic_task.oracle
    assert oracle.ref_log_probs.exp().max().item() <= 1e-3  # precondition: rewards behave as continuous
    kl = bon.kl(oracle.bon_log_probs(n), oracle.ref_log_probs)
    assert ((kl - bon.kl_bon_analytic(n)).abs() <= 1e-2).all(), kl


def test_exact_metrics_of_the_reference(flat_synthetic_task):
    """π_ref against itself: KL 0 and win rate exactly ½ (ties counted ½)."""
    oracle = flat_synthetic_task.oracle
    m = oracle.metrics(oracle.ref_log_probs, oracle.ref_log_probs)
    assert m["exact_kl"] == 0.0 and m["exact_kl_to_target"] == 0.0
    assert m["exact_win_rate"] == pytest.approx(0.5, abs=1e-12)
    expected_reward = float((oracle.ref_log_probs.exp() * oracle.rewards).sum(-1).mean())
    assert m["exact_reward"] == pytest.approx(expected_reward, abs=1e-12)


# --------------------------------------------------------------------------- the exact Pareto frontier
# Regrets are compared with 1e-9: a frontier value and a policy's value are float64 sums of 4 × 7,776 terms of size
# ≤ ~5 (round-off ~1e-13) and the bisection on log β ends at float64 resolution, while a policy truly above the
# frontier would be a modelling error (e.g. one β per prompt) of order 1e-3 or more (measured below).
REGRET_TOL = 1e-9
UTILITIES = ("reward", "win_rate")


@pytest.mark.parametrize("utility", UTILITIES)
def test_optimum_policies_are_on_the_exact_frontier(any_task, utility):
    """π*_β ∝ π_ref·exp(u/β) with one β for all prompts has zero regret on its utility's frontier."""
    oracle = any_task.oracle
    u = oracle.frontier_utility(utility)
    for beta in (3.0, 1.0, 1 / 3, 1 / 15, 0.01):
        exact = oracle.metrics(bon.kl_regularised_optimum_log_probs(oracle.ref_log_probs, u, beta))
        regret = oracle.frontier_regret(exact)["exact_regret" if utility == "reward" else "exact_win_rate_regret"]
        assert abs(regret) <= REGRET_TOL, (beta, regret)


def test_no_policy_beats_the_exact_frontier(synthetic_task):
    """BoN, randomly perturbed references and π* with one β per prompt all lie on or below both frontiers; the
    per-prompt β and BoN strictly below the reward frontier (so the check has power)."""
    oracle = synthetic_task.oracle
    ref, r = oracle.ref_log_probs, oracle.rewards
    g = seeded(0)
    noisy = [torch.log_softmax(ref + scale * torch.randn(ref.shape, generator=g, dtype=torch.float64), -1)
             for scale in (0.5, 2.0)]
    per_prompt_beta = torch.tensor([0.1, 0.3, 1.0, 3.0], dtype=torch.float64)[:, None]
    mixed = torch.log_softmax(ref + r / per_prompt_beta, -1)
    bons = [oracle.bon_log_probs(n) for n in (2, 4, 16, 64)]
    regrets = [oracle.frontier_regret(oracle.metrics(logp)) for logp in (*noisy, mixed, *bons)]
    for regret in regrets:
        assert min(regret.values()) >= -REGRET_TOL, regret
    assert regrets[2]["exact_regret"] > 1e-2  # one β per prompt spends the KL budget worse than one shared β
    assert all(regret["exact_regret"] > 1e-3 for regret in regrets[3:])


def test_frontier_is_increasing_and_concave_between_reference_and_greedy(synthetic_task):
    oracle = synthetic_task.oracle
    best = float(oracle.rewards.max(-1).values.mean())
    reference = float((oracle.ref_log_probs.exp() * oracle.rewards).sum(-1).mean())
    greedy_kl = float(-oracle.ref_log_probs.gather(-1, oracle.rewards.argmax(-1, keepdim=True)).mean())
    kls = torch.linspace(0.0, 1.2 * greedy_kl, 25, dtype=torch.float64)
    values = torch.tensor([oracle.frontier_at_kl(float(k)) for k in kls], dtype=torch.float64)
    assert values[0] == pytest.approx(reference, abs=1e-12) and values[-1] == pytest.approx(best, abs=1e-12)
    assert (values.diff() >= -REGRET_TOL).all()
    assert (values.diff().diff() <= REGRET_TOL).all()  # concave: a mixture of two policies is a policy


def test_frontier_curves_lie_on_the_frontier(synthetic_task):
    oracle = synthetic_task.oracle
    curves = oracle.frontier_curves(points=40)
    for utility in UTILITIES:
        curve = curves[f"optimum_{utility}"]
        assert curve["kl"] == sorted(curve["kl"]) and curve["kl"][0] == 0.0
        for k in (1, 10, 20, 30):
            assert oracle.frontier_at_kl(curve["kl"][k], utility) == pytest.approx(curve[utility][k], abs=REGRET_TOL)
        for kl, value in zip(curves["bon"]["kl"], curves["bon"][utility]):  # π_BoN on or below
            assert value <= oracle.frontier_at_kl(kl, utility) + REGRET_TOL


def _counts_by_prompt(task, samples):
    """Sampled enumeration indices, one tensor per prompt (rows are grouped by prompt in prompt order)."""
    idx = task.oracle.index_of(samples)
    pidx = samples.prompt_index.cpu()
    return [idx[pidx == i] for i in range(len(task.test_prompts))]


def _policy(task, **sampling):
    return ModelPolicy(task.reference, task, SamplingConfig(max_new_tokens=5, **{"temperature": 1.0, **sampling}))


@pytest.mark.parametrize("task_name", ["synthetic_task", "flat_synthetic_task"], ids=["default", "flat"])
def test_bon_sampler_matches_exact_bon_distribution(request, task_name):
    """4000 BoN(N=4) draws per prompt vs exact π_BoN, ~20 equal-mass bins contiguous in reward."""
    task = request.getfixturevalue(task_name)
    policy = BoNPolicy(_policy(task), n=4)
    samples = policy.sample(task.test_prompts, 4000, seeded(1234))
    assert len(samples) == 4 * 4000
    assert torch.equal(samples.prompt_index, torch.arange(4).repeat_interleave(4000))
    # every kept sample is scored and its reward is the oracle's reward for that response
    idx = task.oracle.index_of(samples)
    assert torch.equal(samples.rewards.double(), task.oracle.rewards[samples.prompt_index, idx])
    sampled = _counts_by_prompt(task, samples)
    key = task.oracle.rewards
    res = binned_chisquare(sampled, task.oracle.bon_log_probs(4).exp(), key)
    print(f"BoN-4 sampler vs exact ({task_name}): {res}")
    assert res["impossible"] == 0
    assert res["pvalue"] > 1e-3, res
    # power: the same samples reject BoN with N=3
    wrong = binned_chisquare(sampled, task.oracle.bon_log_probs(3).exp(), key)
    assert wrong["pvalue"] < 1e-6, wrong


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reference_sampler_matches_exact_reference(synthetic_task, synthetic_task_t07, temperature):
    """4000 π_ref draws per prompt vs the oracle built at the same temperature (the oracle is built at the
    task's temperature, hence a second task for 0.7)."""
    task = synthetic_task if temperature == 1.0 else synthetic_task_t07
    other = synthetic_task_t07 if temperature == 1.0 else synthetic_task
    assert task.oracle.temperature == temperature
    samples = _policy(task, temperature=temperature).sample(task.test_prompts, 4000, seeded(7))
    sampled = _counts_by_prompt(task, samples)
    res = binned_chisquare(sampled, task.oracle.ref_log_probs.exp(), task.oracle.rewards)
    print(f"reference sampler T={temperature} vs exact: {res}")
    assert res["impossible"] == 0
    assert res["pvalue"] > 1e-3, res
    # power: the same samples reject the model at the other temperature
    wrong = binned_chisquare(sampled, other.oracle.ref_log_probs.exp(), task.oracle.rewards)
    assert wrong["pvalue"] < 1e-6, wrong


def _enumeration_logits(task, temperature: float) -> list[torch.Tensor]:
    """The model's float64 logits / temperature at every response step of every enumerated response, per prompt."""
    oracle = task.oracle
    model64 = copy.deepcopy(task.reference).to(torch.float64).eval()
    lp_len, lr = len(oracle.prompts[0]), oracle.responses.shape[1]
    out = []
    with torch.no_grad():
        for i in range(len(oracle.prompts)):
            pairs = oracle.all_pairs(i)
            ids = torch.cat([pairs.prompt_ids, pairs.response_ids], 1)
            out.append(model64(input_ids=ids).logits[:, lp_len - 1 : lp_len - 1 + lr] / temperature)
    return out


def _exact_top_k_log_probs(task, logits: list[torch.Tensor], k: int) -> tuple[torch.Tensor, float]:
    """Exact log-probs of the model sampled with per-token top-k over the enumeration: at each step the logits
    restricted to their k largest and renormalised. Also returns the smallest gap between the k-th and (k+1)-th
    logit (the float32 sampler keeps the same tokens when it is not tiny)."""
    responses = task.oracle.responses
    rows, min_gap = [], float("inf")
    for lg in logits:
        masked = lg
        if k < lg.shape[-1]:
            top = torch.topk(lg, k + 1, dim=-1).values
            min_gap = min(min_gap, float((top[..., k - 1] - top[..., k]).min()))
            masked = lg.masked_fill(lg < top[..., k - 1 : k], float("-inf"))
        logp = torch.log_softmax(masked, -1).gather(-1, responses[..., None]).squeeze(-1)
        rows.append(logp.sum(-1))
    return torch.stack(rows), min_gap


def test_top_k_sampler_matches_exact_top_k_distribution(synthetic_task):
    task = synthetic_task
    logits = _enumeration_logits(task, 1.0)
    exact, gap = _exact_top_k_log_probs(task, logits, 3)
    assert gap > 1e-4  # precondition: no near-ties at the top-k boundary
    probs = exact.exp()
    assert torch.allclose(probs.sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-9, rtol=0)
    assert ((probs > 0).sum(-1) == 3**5).all()  # 3 choices at each of 5 steps
    # the float64 logits without a filter reproduce the oracle (the exact top-k distribution is built right)
    full, _ = _exact_top_k_log_probs(task, logits, 6)
    assert torch.allclose(full, task.oracle.ref_log_probs, atol=1e-9, rtol=0)
    samples = _policy(task, top_k=3).sample(task.test_prompts, 4000, seeded(11))
    sampled = _counts_by_prompt(task, samples)
    res = binned_chisquare(sampled, probs, task.oracle.rewards)
    print(f"top-3 sampler vs exact: {res}")
    assert res["impossible"] == 0  # never a token outside the top 3
    assert res["pvalue"] > 1e-3, res
    # power: the same samples reject top-4
    wrong, _ = _exact_top_k_log_probs(task, logits, 4)
    wrong_res = binned_chisquare(sampled, wrong.exp(), task.oracle.rewards)
    assert wrong_res["pvalue"] < 1e-6, wrong_res


def test_oracle_model_log_probs_match_the_sampling_distribution_of_a_perturbed_model(flat_synthetic_task):
    """The oracle's exact log-probs of any model are the distribution that model's sampler draws from."""
    task = flat_synthetic_task
    model = copy.deepcopy(task.reference)
    g = seeded(3)
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn(model.lm_head.weight.shape, generator=g) * 0.1)
    exact = task.oracle.model_log_probs(model)
    assert torch.allclose(exact.exp().sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-9, rtol=0)
    policy = ModelPolicy(model, task, SamplingConfig(temperature=1.0, max_new_tokens=5))
    samples = policy.sample(task.test_prompts, 4000, seeded(5))
    res = binned_chisquare(_counts_by_prompt(task, samples), exact.exp(), task.oracle.rewards)
    print(f"perturbed model sampler vs exact: {res}")
    assert res["pvalue"] > 1e-3, res
    wrong = binned_chisquare(_counts_by_prompt(task, samples), task.oracle.ref_log_probs.exp(), task.oracle.rewards)
    assert wrong["pvalue"] < 1e-6, wrong


@pytest.mark.parametrize("override", ["sampling.top_k=3", "sampling.top_p=0.5"])
def test_exact_values_are_never_silently_wrong_under_top_k_or_top_p(make_config, override):
    """With sampling.top_k / top_p set on the synthetic task, π_ref is the *filtered* model (that is what the
    reference cache, BoN and evaluation sample). Either the config is refused, naming the key, or the oracle's
    exact π_ref must be that filtered distribution: its "exact" metrics must describe what is sampled.

    (Chi-square as elsewhere: fixed seed, p > 1e-3 fails a correct sampler/oracle pair for 1 in 1000 seeds.)"""
    from conftest import build_task_from_config as build_task

    from vbon_exp.config import ConfigError, validate

    cfg = make_config(override, "device=cpu")
    try:
        validate(cfg)
    except ConfigError as err:
        assert override.split("=")[0] in str(err)
        return
    task = build_task(cfg)
    sampling = SamplingConfig(**{k: cfg.sampling[k] for k in ("temperature", "top_k", "top_p", "max_new_tokens")})
    samples = ModelPolicy(task.reference, task, sampling).sample(task.test_prompts, 2000, seeded(0))
    res = binned_chisquare(_counts_by_prompt(task, samples), task.oracle.ref_log_probs.exp(), task.oracle.rewards)
    assert res["pvalue"] > 1e-3, (
        f"{override} passes validation but the synthetic oracle's exact π_ref is the unfiltered model: {res}"
    )


def test_oracle_at_another_temperature_is_the_oracle_built_there(synthetic_task, synthetic_task_t07):
    """`at_temperature` (what evaluation at eval.temperatures uses) gives exactly the oracle a task built at that
    temperature has: π_ref, BoN and any model's distribution at 0.7, not at the task's 1."""
    task, built = synthetic_task, synthetic_task_t07
    moved = task.oracle.at_temperature(0.7, task.reference)
    assert moved.temperature == 0.7 and task.oracle.temperature == 1.0
    assert torch.equal(moved.ref_log_probs, built.oracle.ref_log_probs)
    assert torch.equal(moved.bon_log_probs(4), built.oracle.bon_log_probs(4))
    model = copy.deepcopy(task.reference)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    assert torch.equal(moved.model_log_probs(model), built.oracle.model_log_probs(model))
    # the change has to be visible: π_ref at 0.7 is far from π_ref at 1
    assert float(bon.kl(moved.ref_log_probs, task.oracle.ref_log_probs).mean()) > 0.1
    assert task.at_temperature(0.7).oracle.temperature == 0.7 and task.at_temperature(1.0) is task
