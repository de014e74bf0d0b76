"""Each trainer converges, on the exactly solvable synthetic task, to the distribution its objective defines.

Runs go through `vbon_exp.run.run` with the composed config (the synthetic task's own training scale in
conf/scale/synthetic.yaml), fixed seeds, wandb disabled. The bars are the issue's: exact
KL(π_θ ‖ target) after training ≤ 25% of its value at π_ref. Two sizes of each run (conftest.sizes): `short`, in
the fast tier, 3-token responses and 30 updates (KL(π_ref ‖ π_BoN(4)) is 1.60 there too); `full`, marked slow, the
task's own 100 updates on 5-token responses. Measured, short, over seed shifts 0-3: vbon-l1/ppo 9-14%,
vbon-exact/ppo 10-16%, kl_rl/ppo 3-4%, vbon-l1/rloo 13-14.5%, vbon-exact/rloo 13-15%, kl_rl/rloo 5-7%; full, at seed 0
(see the closing note of the training-objectives issue): vbon-l1/ppo 8%, vbon-exact/ppo 7%, kl_rl/ppo 1.5%,
vbon-l1/rloo 9%, kl_rl/rloo 2%. The margin to 25% is wide at both sizes (≥ 1.5×), and the runs are deterministic
(seeded generators), so the tests are not flaky."""

from pathlib import Path

import pytest
import torch
from conftest import SHORT_RESPONSES, run_point, short_training, sizes
from safetensors.torch import load_file

import vbon_exp.config  # noqa: F401  (resolvers)
from vbon_exp.rewards import RewardError


@pytest.mark.parametrize("size", sizes(short_training(30)))
@pytest.mark.parametrize(
    "overrides",
    [
        ("objective=vbon", "objective.bound=l1", "algo=ppo"),
        ("objective=vbon", "objective.bound=exact", "algo=ppo"),
        ("objective=kl_rl", "algo=ppo"),
        ("objective=vbon", "objective.bound=l1", "algo=rloo"),
        ("objective=vbon", "objective.bound=exact", "algo=rloo"),
        ("objective=kl_rl", "algo=rloo"),
    ],
    ids=["vbon-l1-ppo", "vbon-exact-ppo", "kl_rl-ppo", "vbon-l1-rloo", "vbon-exact-rloo", "kl_rl-rloo"],
)
def test_rl_objective_converges_to_its_target(tmp_path, overrides, size):
    p = run_point(tmp_path, tmp_path / "run", *overrides, "objective.beta=0.3333333333333333", *size)
    assert p["n"] == pytest.approx(4.0)
    assert p["exact_kl_to_target_init"] > 1.0  # π_ref is far from the target: the bar is not trivial
    assert p["exact_kl_to_target"] <= 0.25 * p["exact_kl_to_target_init"], p
    # the estimates agree with the exact values (sampled KL within 5 SE; it is the full-vocabulary estimator)
    assert abs(p["kl"] - p["exact_kl"]) < 5 * p["kl_se"] + 1e-3
    assert (tmp_path / "run" / "policy" / "model.safetensors").exists()


@pytest.mark.parametrize("size", sizes((SHORT_RESPONSES,)))
def test_bon_sft_improves_reward_and_approaches_bon(tmp_path, size):
    """Short (3-token responses, the same SFT schedule), measured over seed shifts 0-3: exact reward 1.06-1.09 against
    π_ref's 0.058 (bar: + 0.5), KL to π_BoN(4) 7-8% of π_ref's (bar 50%)."""
    p = run_point(tmp_path, tmp_path / "run", "objective=bon_sft", "objective.n=4", *size)
    ref = run_point(tmp_path, tmp_path / "ref", "objective=bon", "objective.n=1", *size)  # N = 1: π_ref itself
    assert p["exact_reward"] > ref["exact_reward"] + 0.5, (p["exact_reward"], ref["exact_reward"])
    assert p["exact_kl_to_target"] < 0.5 * p["exact_kl_to_target_init"]


def _policy_tensors(run_dir: Path, update: int) -> dict:
    return load_file(str(run_dir / "checkpoints" / f"step-{update:08d}" / "policy.safetensors"))


@pytest.mark.parametrize("algo", ["ppo", "rloo"])
def test_resume_equals_uninterrupted_run(tmp_path, algo):
    """Stop after update k = 3, resume to k + 1 = 4: parameters equal an uninterrupted 4-update run's."""
    # a small synthetic task (3-token responses): resuming does not depend on its size, and its exact oracle (a
    # forward pass over every response, twice a run) enumerates 6³ = 216 responses instead of 6⁵ = 7776
    common = ("objective=vbon", f"algo={algo}", "task.response_length=3", "eval.samples_per_prompt=4",
              "train.checkpoint_every=0")
    run_point(tmp_path, tmp_path / "a", *common, "train.max_updates=3")
    assert (tmp_path / "a" / "checkpoints" / "latest").read_text() == "step-00000003"
    run_point(tmp_path, tmp_path / "a", *common, "train.max_updates=4")  # resume=auto finds update 3
    run_point(tmp_path, tmp_path / "b", *common, "train.max_updates=4")
    resumed, straight = _policy_tensors(tmp_path / "a", 4), _policy_tensors(tmp_path / "b", 4)
    assert resumed.keys() == straight.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=name)
    # and the resumed update did move the parameters (the comparison is not between two untouched copies); the
    # checkpoint it resumed from is still there (the newest 2 are kept)
    before = _policy_tensors(tmp_path / "a", 3)
    assert any(not torch.equal(before[k], resumed[k]) for k in resumed)


def test_nan_reward_stops_training_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    common = ("objective=kl_rl", "task.response_length=3", "eval.samples_per_prompt=4", "train.checkpoint_every=0")
    run_point(tmp_path, tmp_path / "a", *common, "train.max_updates=2")
    ckpt = tmp_path / "a" / "checkpoints" / "step-00000002" / "policy.safetensors"
    before = ckpt.read_bytes()

    from vbon_exp.tasks.synthetic import TabularReward

    monkeypatch.setattr(TabularReward, "__call__", lambda self, s: torch.full((len(s),), float("nan")))
    with pytest.raises(RewardError, match=r"synthetic-tabular.*training update 2"):
        run_point(tmp_path, tmp_path / "a", *common, "train.max_updates=4")
    assert ckpt.read_bytes() == before
    assert (tmp_path / "a" / "checkpoints" / "latest").read_text() == "step-00000002"
