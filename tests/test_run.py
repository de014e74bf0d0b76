"""vbon_exp/run.py: the pipeline's own pieces (the end-to-end runs are in test_cli, test_objectives, test_tasks), and
the evaluation at several temperatures and with judges (eval.temperatures, eval.judges)."""

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import SHORT_RESPONSES, build_task_from_config, perturbed
from tiny_artifacts import artifacts  # noqa: F401  (a fixture)

from vbon_exp.config import validate
from vbon_exp.errors import ConfigError
from vbon_exp.evaluation import BON_POOL, ModelPolicy
from vbon_exp.objectives import build_objective
from vbon_exp.reference import task_caches
from vbon_exp.run import base_point, evaluate_run


def reference_caches(cfg, nodes, task, sampling, names) -> dict:
    """The run's caches of `names` (a split, or an evaluation cache of the test prompts such as the BoN pool)."""
    requests = {name: (nodes.eval.bon_pool_m if name == BON_POOL else None) for name in names}
    return task_caches(task, requests, sampling=sampling, seed=cfg.seed, settings=nodes.reference)


def test_train_and_test_caches_never_share_samples(make_config):
    """The split is part of the cache key: on the synthetic task (train prompts = test prompts) the two splits get
    two caches drawn with different seeds, so a policy is never evaluated against the samples it trained on."""
    cfg = make_config("reference.m=16", "device=cpu")
    nodes = validate(cfg)
    task = build_task_from_config(cfg)
    caches = reference_caches(cfg, nodes, task, nodes.sampling, ["train", "test"])
    assert caches["train"].path != caches["test"].path
    assert task.train_prompts == task.test_prompts
    assert not torch.equal(caches["train"].sorted_rewards, caches["test"].sorted_rewards)
    again = reference_caches(cfg, nodes, task, nodes.sampling, ["test"])["test"]  # keyed by content: reused as it is
    assert again.path == caches["test"].path and torch.equal(again.sorted_rewards, caches["test"].sorted_rewards)


def test_results_line_says_which_reward_output_was_trained_on(make_config):
    assert base_point(validate(make_config("task=imdb")))["reward_output"] == "prob"
    assert base_point(validate(make_config("task=imdb", "reward.output=logit")))["reward_output"] == "logit"
    assert base_point(validate(make_config()))["reward_output"] is None  # the synthetic task's reward is a table


def test_test_m_sizes_the_test_cache_only(make_config):
    """reference.test_m keeps one evaluation yardstick while an M ablation varies the training F̂ (reference.m)."""
    cfg = make_config("reference.m=8", "reference.test_m=24", "device=cpu")
    nodes = validate(cfg)
    task = build_task_from_config(cfg)
    caches = reference_caches(cfg, nodes, task, nodes.sampling, ["train", "test"])
    assert caches["train"].m == 8 and caches["test"].m == 24
    assert base_point(nodes)["test_m"] == 24 and base_point(validate(make_config()))["test_m"] is None


# --------------------------------------------------------------------------- evaluation temperatures and judges


@pytest.fixture(scope="module")
def temperature_points(tmp_path_factory):
    """A perturbed policy and BoN(4), evaluated on the synthetic task (default π_ref, sampling temperature 1; 3-token
    responses: the oracles at each temperature enumerate 216 responses per prompt, not 7,776) at temperatures 0.5
    and 1, with M = 4096 and 2000 samples per prompt."""
    from conftest import compose_config

    cfg = compose_config(tmp_path_factory.mktemp("eval-temps"), [
        "objective=bon", "objective.n=4", "objective.estimate=sample", "eval.temperatures=[0.5,1.0]",
        "reference.m=4096", "eval.samples_per_prompt=2000", "device=cpu", SHORT_RESPONSES])
    nodes = validate(cfg)
    task = build_task_from_config(cfg)
    caches = reference_caches(cfg, nodes, task, nodes.sampling, ["test"])
    objective = build_objective(nodes.objective)
    bon = objective.fit(SimpleNamespace(task=task, sampling=nodes.sampling, settings=nodes, extras={}))
    model = ModelPolicy(perturbed(task.reference, 0.05, 123), task, nodes.sampling)
    points = {name: list(evaluate_run(nodes, objective, policy, task, caches, nodes.sampling, run_dir=None))
              for name, policy in (("model", model), ("bon", bon))}
    return task, model, points


def test_one_evaluation_per_temperature_against_pi_ref_at_that_temperature(temperature_points):
    """At each evaluation temperature T the policy samples at T, and its KL is to π_ref at T with both models'
    token distributions at T: the full-vocabulary estimate is within 3 SE of the exact KL(π_θ,T ‖ π_ref,T), and
    the exact values are those of an oracle built at T. Measured (seed shift 0): exact KL 1.709 at T = 0.5, 0.563 at
    T = 1 (estimates 1.705 ± 0.004, 0.563 ± 0.001), so mixing up the temperatures of either model fails by > 100 SE
    (by ~300 here; ≥ 200 at seed shifts 0-9, the perturbed policy moving with the shift). Rewards within 3 SE of the
    exact reward at T (each fixed-seed check fails with probability ≈ 0.3% for a correct estimator; |z| ≤ 2.1 at
    shifts 0-9 except one at 2.99, shift 3, T = 0.5); win rates within 3 SE + 0.01 of the exact win rate against π_ref
    at T (0.01 for the M = 4096 cache's own error: ≤ 1/(2√M) = 0.008 per prompt, 0.004 over 4 prompts). Measured win
    rates 0.421 ± 0.004 (exact 0.423) at T = 0.5 and 0.459 ± 0.004 (exact 0.455) at T = 1."""
    task, model, points = temperature_points
    lines = points["model"]
    assert [p["eval_temperature"] for p in lines] == [0.5, 1.0]
    exact = {}
    for p in lines:
        oracle = task.oracle.at_temperature(p["eval_temperature"], task.reference)
        exact[p["eval_temperature"]] = oracle.metrics(oracle.model_log_probs(model.model))
        for key, value in exact[p["eval_temperature"]].items():
            assert p[key] == pytest.approx(value, abs=1e-12), key
        assert p["kl_estimator"] == "full" and abs(p["kl"] - p["exact_kl"]) <= 3 * p["kl_se"], p
        assert abs(p["reward"] - p["exact_reward"]) <= 3 * p["reward_se"], p
        assert abs(p["win_rate"] - p["exact_win_rate"]) <= 3 * p["win_rate_se"] + 0.01, p
    assert exact[0.5]["exact_kl"] - exact[1.0]["exact_kl"] > 100 * max(p["kl_se"] for p in lines)
    # the objective's target is defined at the temperature it trained at: only that line measures the KL to it
    assert "exact_kl_to_target" not in lines[0] and "exact_kl_to_target" in lines[1]


def test_bon_at_an_evaluation_temperature_draws_its_candidates_from_pi_ref_at_it(temperature_points):
    """BoN(4) at T: reward within 3 SE of the exact BoN reward of π_ref at T, and win rate within 3 SE + 0.01 of
    the exact one (0.8 = N/(N+1) for continuous rewards) against a cache at T (the cache's own error: ≤ 1/(2√M)
    = 0.008 per prompt, 0.004 over 4 prompts, so 0.01 is 2.5 SD on top of 3 SE). Measured (seed shift 0): rewards
    1.166 ± 0.008 (exact 1.158) at T = 0.5 and 1.120 ± 0.008 (exact 1.108) at T = 1, win rates 0.801 and 0.803 ±
    0.003. The two exact rewards differ by 0.050, more than 5 SE (6.0 SE here, the SE 0.0081-0.0083 at shifts 0-9;
    with 5-token responses it was 18 SE): drawing the candidates at the sampling temperature would put the estimate
    ~6 SE from the exact reward at T = 0.5, which the 3-SE check fails with probability > 99%."""
    task, _, points = temperature_points
    lines = points["bon"]
    for p in lines:
        oracle = task.oracle.at_temperature(p["eval_temperature"], task.reference)
        assert p["exact_reward"] == pytest.approx(oracle.metrics(oracle.bon_log_probs(4))["exact_reward"], abs=1e-12)
        assert abs(p["reward"] - p["exact_reward"]) <= 3 * p["reward_se"], p
        assert abs(p["win_rate"] - p["exact_win_rate"]) <= 3 * p["win_rate_se"] + 0.01, p
    assert lines[0]["exact_reward"] - lines[1]["exact_reward"] > 5 * max(p["reward_se"] for p in lines)


def test_tldr_at_four_evaluation_temperatures_writes_four_lines_and_the_figure(tmp_path, artifacts):  # noqa: F811
    """TL;DR with tiny models, trained for 0 updates (the policy is π_ref): four results lines, one per evaluation
    temperature, each with KL exactly 0 (the policy and π_ref at the same temperature), each against its own test
    cache at its temperature (four test caches, none at the unused sampling temperature 0.7); then the
    vs-temperature figure of `make pareto-plot`."""
    from test_tasks import FAST, compose_cfg, task_overrides

    from vbon_exp.analysis import cli as pareto
    from vbon_exp.run import run

    cfg = compose_cfg(tmp_path, [*task_overrides("tldr", artifacts), "objective=kl_rl", "objective.beta=0.5",
                                 "reward.eos_penalty=null", "train.max_updates=0", "train.checkpoint_every=0",
                                 "eval.temperatures=[0.25,0.5,0.75,1.0]", *FAST])
    run_dir = tmp_path / "run"
    first = run(cfg, run_dir=run_dir)
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [p["eval_temperature"] for p in lines] == [0.25, 0.5, 0.75, 1.0] and first == lines[0]
    for p in lines:
        assert p["temperature"] == 0.7 and p["status"] == "ok"  # the sampling temperature it trained at
        assert p["kl_estimator"] == "full" and p["kl"] == pytest.approx(0.0, abs=1e-6), p
        assert 0.0 <= p["win_rate"] <= 1.0 and math.isfinite(p["reward"])
    metas = [json.loads(m.read_text()) for m in (tmp_path / "cache" / "reference").glob("*/meta.json")]
    assert sum(m["split"] == "test" for m in metas) == 4
    # four evaluation temperatures are four comparable sets: one frontier each
    assert pareto.main([str(run_dir), "--wandb-mode", "disabled"]) == 0
    assert (run_dir / "pareto" / "vs_temperature.png").stat().st_size > 0


def test_judges_score_the_same_evaluation_samples(tmp_path, artifacts):  # noqa: F811
    """IMDB with tiny models, eval.judges=[imdb_tiny, vader] by name (conf/reward/<name>.yaml) at two evaluation
    temperatures. The imdb_tiny judge is the training reward itself (the tiny classifier where conf/reward/
    imdb_tiny.yaml looks for it): on the same samples its reward and SE equal the training reward's exactly, and its
    win rate the training win rate (its reference cache has the same key: same reward, same temperature). VADER's
    compound score lies in [−1, 1], and its win rate is against π_ref samples VADER scored at that temperature."""
    from test_tasks import FAST, compose_cfg, task_overrides

    from vbon_exp.run import run

    shutil.copytree(artifacts["classifier"], tmp_path / "tiny" / "imdb_reward")
    overrides = [o for o in task_overrides("imdb", artifacts) if not o.startswith("reward.")]
    cfg = compose_cfg(tmp_path, [*overrides, "reward=imdb_tiny", "objective=bon", "objective.n=2",
                                 "objective.estimate=sample", "eval.judges=[imdb_tiny,vader]",
                                 "eval.temperatures=[0.5,1.0]", *FAST])
    run(cfg, run_dir=tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [p["eval_temperature"] for p in lines] == [0.5, 1.0]
    for p in lines:
        assert p["judge/imdb_tiny/reward"] == p["reward"] and p["judge/imdb_tiny/reward_se"] == p["reward_se"]
        assert p["judge/imdb_tiny/win_rate"] == p["win_rate"]
        assert p["judge/imdb_tiny/win_rate_se"] == p["win_rate_se"]
        assert -1.0 <= p["judge/vader/reward"] <= 1.0 and 0.0 <= p["judge/vader/win_rate"] <= 1.0
        assert p["judge/vader/reward_se"] >= 0 and p["judge/vader/win_rate_se"] >= 0
    metas = [json.loads(m.read_text()) for m in (tmp_path / "cache" / "reference").glob("*/meta.json")]
    assert sum(m["reward"] == "vader:True" for m in metas) == 2  # one VADER-scored π_ref cache per temperature


def test_judges_and_other_temperatures_count_in_the_memory_preflight(make_config):
    """Each judge holds one more test cache; another evaluation temperature one more (they run one at a time)."""
    from vbon_exp.config import evaluation_test_caches

    nodes = validate(make_config("task=imdb"))
    assert evaluation_test_caches(nodes) == 1
    assert evaluation_test_caches(validate(make_config("task=imdb", "eval.temperatures=[0.7]"))) == 1
    assert evaluation_test_caches(validate(make_config("task=imdb", "eval.temperatures=[0.5,0.7,1.0]"))) == 2
    assert evaluation_test_caches(validate(make_config("task=imdb", "eval.judges=[vader]"))) == 2


@pytest.mark.parametrize("overrides, message", [
    (["task=imdb", "eval.judges=[vadr]"], r"eval\.judges: no reward config named \['vadr'\]"),
    (["task=imdb", "eval.judges=[vader,vader]"], r"eval\.judges lists \['vader'\] more than once"),
    (["eval.judges=[vader]"], r"eval\.judges=\['vader'\]: judges score text"),
    (["eval.temperatures=[0.5,0]"], r"eval\.temperatures\[1\] must be > 0"),
    (["eval.temperatures=[]"], r"eval\.temperatures is empty"),
    (["eval.temperatures=[0.5,0.5]"], r"eval\.temperatures lists \[0\.5\] more than once"),
])
def test_bad_judges_and_temperatures_are_one_error_naming_the_key(make_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_config(*overrides))


def test_judges_are_reward_configs_composed_by_name(make_config, tmp_path):
    """`eval.judges=[name]` composes conf/reward/<name>.yaml as `reward=<name>` would: its schema's defaults, its
    interpolations resolved against the run's config."""
    nodes = validate(make_config("task=imdb", "eval.judges=[imdb_tiny,vader]"))
    assert list(nodes.judges) == ["imdb_tiny", "vader"]
    assert type(nodes.judges["vader"]).__name__ == "VaderRewardConfig" and nodes.judges["vader"].with_prompt
    tiny = nodes.judges["imdb_tiny"]
    assert tiny.name_or_path == f"{tmp_path / 'out'}/tiny/imdb_reward" and tiny.output == "prob"


def test_points_aiming_at_bon_carry_their_distance_to_it(make_config):
    """vBoN, BoN-SFT, BoNBoN, BOND (and BoN) aim at π_BoN(N): their lines carry its KL bound log N − (N−1)/N and
    win rate N/(N+1), and the distance to each; KL-RL and DPO aim elsewhere and get none."""
    import math

    from vbon_exp.evaluation import bon_target_distance
    from vbon_exp.objectives import build_objective

    d = bon_target_distance(4.0, {"kl": 0.5, "win_rate": 0.7})
    assert d["target_kl_bound"] == pytest.approx(math.log(4) - 0.75) and d["target_win_rate"] == 0.8
    assert d["kl_minus_target_bound"] == pytest.approx(0.5 - (math.log(4) - 0.75))
    assert d["win_rate_minus_target"] == pytest.approx(-0.1)
    assert bon_target_distance(None, {"kl": 0.5, "win_rate": 0.7}) == {}
    beta = "objective.beta=0.14285714285714285"  # N = 8
    for name, n in [("vbon", 8), ("bon", 8), ("bon_sft", 8), ("bond", 8), ("bonbon", 8), ("kl_rl", None),
                    ("dpo", None)]:
        objective = build_objective(validate(make_config(f"objective={name}", beta)).objective)
        assert objective.bon_target_n() == (pytest.approx(n) if n else None), name


def test_the_bon_pool_is_its_own_cache(make_config):
    """The BoN pool (objective=bon estimate=cache) is a second cache of the test prompts: same prompts and even the
    same M here, but `purpose` in its key gives it its own directory and its own draws, so the win rates that compare
    BoN with the test cache never compare a sample with itself."""
    cfg = make_config("reference.m=16", "eval.bon_pool_m=16", "device=cpu")
    nodes = validate(cfg)
    task = build_task_from_config(cfg)
    caches = reference_caches(cfg, nodes, task, nodes.sampling, ["test", BON_POOL])
    pool, test = caches[BON_POOL], caches["test"]
    assert pool.path != test.path and pool.m == test.m == 16
    assert not torch.equal(pool.sorted_rewards, test.sorted_rewards)
    assert json.loads((pool.path / "meta.json").read_text())["purpose"] == BON_POOL
    cfg24 = make_config("reference.m=16", "eval.bon_pool_m=24", "device=cpu")
    bigger = reference_caches(cfg24, validate(cfg24), task, nodes.sampling, [BON_POOL])[BON_POOL]
    assert bigger.m == 24 and bigger.path != pool.path  # M_eval is eval.bon_pool_m


def test_bon_for_every_n_from_one_pool_writes_one_line_per_n(make_config, tmp_path):
    """`objective=bon objective.n=all`: N = 1, 2, 4, 8 (≤ M_eval/4 = 8) from one pool, one results line each with its
    own N and β (null for N = 1), and no sampling at evaluation; at a second evaluation temperature, the same N from
    a pool drawn at that temperature (the exact values of π_BoN at it, no target there)."""
    from vbon_exp.run import run

    cfg = make_config("objective=bon", "objective.n=all", "eval.bon_pool_m=32", "reference.m=32",
                      "task.response_length=3", "eval.temperatures=[1.0,0.5]", "wandb.mode=disabled", "device=cpu")
    first = run(cfg, run_dir=tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [(p["eval_temperature"], p["n"]) for p in lines] == [(t, n) for t in (1.0, 0.5) for n in (1, 2, 4, 8)]
    assert first["n"] == 1 and first["eval_temperature"] == 1.0
    assert [p["beta"] for p in lines[:4]] == [None, 1.0, pytest.approx(1 / 3), pytest.approx(1 / 7)]
    for p in lines:
        assert p["estimate"] == "cache" and p["bon_pool_m"] == 32 and p["status"] == "ok"
        assert p["kl_analytic"] == pytest.approx(math.log(p["n"]) - (p["n"] - 1) / p["n"], abs=1e-12)
        assert "eval_gen_tok_s" not in p  # nothing sampled after the caches
        assert set(p["se_covers"]) >= {"reward_se", "win_rate_se", "win_rate_first_se", "kl_se", "kl_k1_se"}
        assert ("exact_kl_to_target" in p) == (p["eval_temperature"] == 1.0)
        assert p.get("target_n", p["n"]) == p["n"] and ("target_n" in p) == (p["eval_temperature"] == 1.0)
    assert lines[3]["exact_reward"] > lines[0]["exact_reward"]
    assert lines[7]["exact_reward"] != pytest.approx(lines[3]["exact_reward"])  # π_BoN at T = 0.5 is another
    metas = [json.loads(m.read_text()) for m in (tmp_path / "out" / "cache" / "reference").glob("*/meta.json")]
    assert sum(m.get("purpose") == BON_POOL for m in metas) == 2  # one pool per temperature


def test_a_finished_member_run_again_in_its_directory_is_skipped(tmp_path):
    """A sweep re-run into its own sweep dir: a member whose results line is there returns it without building
    anything (one line, no second cache build); another setting in that directory, or train.resume=false, runs."""
    from conftest import compose_cfg

    from vbon_exp.run import run

    def member(*overrides, skip=True):
        return run(compose_cfg(tmp_path / "out", *overrides), run_dir=tmp_path / "run", skip_finished=skip)

    def lines():
        return (tmp_path / "run" / "results.jsonl").read_text().splitlines()

    quick = ("objective=bon", "objective.n=4", "reference.m=16", "eval.bon_pool_m=16", "eval.bootstrap=0",
             "task.response_length=3")  # (the exact oracle of 216 responses per prompt, not 7,776)
    first = member(*quick)
    again = member(*quick)
    assert again == json.loads(lines()[0]) and again["reward"] == first["reward"] and len(lines()) == 1
    member(*quick[:1], "objective.n=8", *quick[2:])  # another setting in the same directory runs
    member(*quick, "train.resume=false")  # asked to run again
    member(*quick, skip=False)  # not a sweep member (the Python API, a single run): runs
    member(*quick, "train.max_updates=3")  # a run stopped early is not complete: runs
    assert len(lines()) == 5
