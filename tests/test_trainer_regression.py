"""Recorded-value regression tests for the trainers (torchtune style): PPO, RLOO and BoN-SFT run their first few
updates / steps on the synthetic task's 2-layer GPT-2 at a fixed seed, on CPU with torch single-threaded, and every
deterministic number the trainer hands its tracker must equal the value recorded below.

What this catches: any change to the loss math (clipping, value loss, GAE, KL penalty, RLOO baseline, whitening,
SFT masking), the optimiser / schedule, the sampler's draws or the seeding of prompts / minibatches shifts at least
one recorded number far outside the tolerance. Verified by running these tests against perturbed copies of the
package; each perturbation failed its test, with the largest relative deviation from the recorded values:
policy clip ε × 0.95: 7e-2 (PPO), 1.05 (RLOO); value-loss factor 0.5 → 0.45: 0.10; value clip × 0.95: 1.5e-3;
PPO KL coefficient × 0.99: 1.7e-3; GAE λ × 0.99: 6.9; whitening eps 1e-8 → 1e-2: 3.8e-3; RLOO baseline
/ (k − 1) → / k: 89; SFT token mean / n → / (n + 1): 4.8e-2. Unperturbed, the values repeat bit for bit.

Tolerance: rel 1e-4, abs 1e-6. float32 CPU kernels are deterministic for a fixed thread count (conftest sets one
thread and the run has no other source of randomness: every draw comes from generators seeded by (seed, update,
purpose)), so on one machine the values repeat bit for bit. The margin is for other CPUs / BLAS builds, whose
vectorised reductions may sum in another order (~1e-7 relative per op), compounded over a dozen Adam steps; even
the 1%-sized perturbations above move some value by ≥ 1.5e-3 relative, 15× the tolerance. abs 1e-6 covers values
that are exactly 0 (the KL of the first rollout, taken before any step). Timing entries (rollout_s, update_s,
*_tok_s) are not compared. A different torch / transformers version may legitimately change the kernels' rounding
(then re-record, after checking the change is numerical noise).

Re-recording after an intentional change: `python -m tests.test_trainer_regression` (from the repository root)
prints the new tables in the format below; paste them, and say in the commit why the numbers moved.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from vbon_exp.evaluation import BoNPolicy, ModelPolicy
from vbon_exp.sampling import SamplingConfig
from vbon_exp.trainers import PPOTrainer, RLConfig, RLOOTrainer, TrainConfig
from vbon_exp.trainers.sft import SFTConfig, SFTTrainer

REL, ABS = 1e-4, 1e-6
# approx_kl = mean((r − 1) − log r) over ratios r ≈ 1: a difference of near-equal numbers, so a CPU whose kernels
# round the log-probs in another order (~1e-7 relative) moves it by ~1e-3 relative (seen: 6e-4 at PPO's update 2 on
# an AVX-512/AMX CPU, bit for bit the same on each machine). Its own tolerance; the smallest perturbation above
# still moves other values by ≥ 1.5e-3.
KEY_REL = {"approx_kl": 5e-3}
TIMING_KEYS = {"rollout_s", "update_s", "generation_tok_s", "update_tok_s"}
SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=5)
SEED = 7
KL_COEF = 0.1
UPDATES = 3

# PPO / RLOO: 8 episodes per update, 4 per minibatch, 2 epochs → 4 optimizer steps per update; 24 episodes in all
# (3 updates, the linear schedule reaching 0 at the end of the third). lr 1e-3: large enough that every update moves
# the policy measurably (clipping happens, the KL to π_ref grows), so the later updates depend on the earlier ones.
# vf_clip 0.01: the value head starts at 0 and moves less than the default 0.2 within an update, so only a small
# value clip makes the clipped value branch take part (and the test sensitive to it).
RL_COMMON = {"lr": 1e-3, "batch_size": 8, "num_minibatches": 2, "ppo_epochs": 2, "total_episodes": 8 * UPDATES,
             "max_grad_norm": 1.0, "clip": 0.2, "vf_clip": 0.01, "vf_coef": 0.2}
PPO_CFG = {**RL_COMMON, "name": "ppo", "whiten_advantages": True}
RLOO_CFG = {**RL_COMMON, "name": "rloo", "rloo_k": 4, "whiten_advantages": False}
# BoN-SFT: 4 BoN(N=4) responses for each of the 4 prompts (16 pairs), 6 per step → 3 steps in one epoch.
SFT_CFG = {"lr": 1e-3, "batch_size": 6, "epochs": 1, "max_grad_norm": 1.0}


class RecordingTracker:
    """Stands in for the wandb tracker: records every `log(metrics, step)` call."""

    def __init__(self):
        self.calls: list[tuple[int, dict]] = []

    def log(self, metrics: dict, step: int) -> None:
        self.calls.append((step, {k: float(v) for k, v in metrics.items()}))

    def deterministic(self) -> list[dict]:
        return [{k.removeprefix("train/"): v for k, v in m.items() if k.removeprefix("train/") not in TIMING_KEYS}
                for _, m in self.calls]


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _fresh_policy(task):
    """A trainable copy of π_ref (what load_causal_lm(task.policy_init) gives, without touching the disk)."""
    return copy.deepcopy(task.reference).requires_grad_(True)


def run_rl(task, trainer_cls, algo: dict, run_dir) -> RecordingTracker:
    torch.set_num_threads(1)
    tracker = RecordingTracker()
    trainer = trainer_cls(
        RLConfig(**algo), TrainConfig(checkpoint_every=0, resume=False, log_every=1),
        policy=_fresh_policy(task), task=task, sampling=SAMPLING,
        sequence_reward=lambda samples, logp_ref: samples.rewards.double(),  # objective=kl_rl
        kl_coef=KL_COEF, accelerator=_accelerator(), run_dir=run_dir, tracker=tracker, seed=SEED,
    )
    trainer.train()
    assert [step for step, _ in tracker.calls] == list(range(1, UPDATES + 1))
    return tracker


def bon_sft_data(task):
    """What objective=bon_sft trains on: BoN(N=4) samples of π_ref, 4 per prompt, from a seeded generator."""
    reference = ModelPolicy(task.reference, task, SAMPLING)
    return BoNPolicy(reference, 4).sample(task.train_prompts, 4, torch.Generator().manual_seed(SEED))


def run_sft(task, run_dir) -> RecordingTracker:
    torch.set_num_threads(1)
    tracker = RecordingTracker()
    trainer = SFTTrainer(
        SFTConfig(**SFT_CFG), TrainConfig(checkpoint_every=0, resume=False),
        policy=_fresh_policy(task), data=bon_sft_data(task), temperature=SAMPLING.temperature,
        accelerator=_accelerator(), run_dir=run_dir, tracker=tracker, seed=SEED,
    )
    trainer.train()
    assert [step for step, _ in tracker.calls] == list(range(1, UPDATES + 1))
    return tracker


# --------------------------------------------------------------------------- recorded values
# Recorded on CPU, torch 2.13.0, transformers 5.24.0, one thread (see the module docstring to re-record).

RECORDED_PPO: list[dict] = [
    {'approx_kl': 0.21532868593931198, 'clipfrac': 0.4000000059604645, 'entropy': 0.7357046902179718, 'kl': 0.0,
     'lr': 0.0006666666666666668, 'objective_reward': 0.4295918941497803, 'pg_loss': -0.03295476734638214,
     'response_length': 5.0, 'reward': 0.4295918941497803, 'vf_loss': 1.163150366395712},
    {'approx_kl': 0.15704936254769564, 'clipfrac': 0.20000000298023224, 'entropy': 0.689627155661583,
     'kl': 0.46799135208129883, 'lr': 0.0003333333333333334, 'objective_reward': -0.14955906569957733,
     'pg_loss': -0.01754523627460003, 'response_length': 5.0, 'reward': -0.14955906569957733,
     'vf_loss': 1.3583496809005737},
    {'approx_kl': 0.006451431749155745, 'clipfrac': 0.06250000093132257, 'entropy': 0.597852349281311,
     'kl': 1.7258055210113525, 'lr': 0.0, 'objective_reward': 1.3587086200714111, 'pg_loss': -0.022538471966981888,
     'response_length': 5.0, 'reward': 1.3587086200714111, 'vf_loss': 1.422838568687439},
]
RECORDED_RLOO: list[dict] = [
    {'approx_kl': 0.19539698865264654, 'clipfrac': 0.26250000298023224, 'entropy': 0.5170190781354904, 'kl': 0.0,
     'lr': 0.0006666666666666668, 'objective_reward': 1.512919306755066, 'pg_loss': -0.004330598749220371,
     'response_length': 5.0, 'reward': 1.512919306755066},
    {'approx_kl': 0.046556901186704636, 'clipfrac': 0.30000000074505806, 'entropy': 0.835895910859108,
     'kl': 1.0294691324234009, 'lr': 0.0003333333333333334, 'objective_reward': 0.24312126636505127,
     'pg_loss': -0.021398574113845825, 'response_length': 5.0, 'reward': 0.24312126636505127},
    {'approx_kl': 0.004751581604068633, 'clipfrac': 0.037500000558793545, 'entropy': 0.62431750446558,
     'kl': 0.07495075464248657, 'lr': 0.0, 'objective_reward': 1.9686164855957031,
     'pg_loss': -0.009028211876284331, 'response_length': 5.0, 'reward': 1.9686164855957031},
]
RECORDED_SFT: list[dict] = [
    {'lr': 0.0006666666666666668, 'sft_loss': 0.9483405947685242},
    {'lr': 0.0003333333333333334, 'sft_loss': 1.0958025455474854},
    {'lr': 0.0, 'sft_loss': 0.5861482620239258},
]


def assert_matches_recorded(got: list[dict], recorded: list[dict]) -> None:
    assert len(got) == len(recorded), (len(got), len(recorded))
    for i, (g, r) in enumerate(zip(got, recorded)):
        assert set(g) == set(r), (i + 1, sorted(set(g) ^ set(r)))
        bad = {k: (g[k], r[k]) for k in r
               if not math.isclose(g[k], r[k], rel_tol=KEY_REL.get(k, REL), abs_tol=ABS)}
        assert not bad, f"update {i + 1}: (got, recorded) = {bad}"


def test_ppo_first_updates_match_recorded_values(synthetic_task, tmp_path):
    got = run_rl(synthetic_task, PPOTrainer, PPO_CFG, tmp_path).deterministic()
    assert_matches_recorded(got, RECORDED_PPO)


def test_rloo_first_updates_match_recorded_values(synthetic_task, tmp_path):
    got = run_rl(synthetic_task, RLOOTrainer, RLOO_CFG, tmp_path).deterministic()
    assert_matches_recorded(got, RECORDED_RLOO)


def test_bon_sft_first_steps_match_recorded_values(synthetic_task, tmp_path):
    got = run_sft(synthetic_task, tmp_path).deterministic()
    assert_matches_recorded(got, RECORDED_SFT)


def test_recorded_runs_are_informative():
    """The recorded numbers exercise what they guard: PPO clips and fits its value head, the policy moves away from
    π_ref, the SFT loss falls, and the linear schedule decays."""
    assert any(u["clipfrac"] > 0 for u in RECORDED_PPO) and any(u["clipfrac"] > 0 for u in RECORDED_RLOO)
    assert all(u["vf_loss"] > 0 for u in RECORDED_PPO) and all("vf_loss" not in u for u in RECORDED_RLOO)
    assert RECORDED_PPO[-1]["kl"] > RECORDED_PPO[0]["kl"] and RECORDED_RLOO[-1]["kl"] > RECORDED_RLOO[0]["kl"]
    assert RECORDED_SFT[-1]["sft_loss"] < RECORDED_SFT[0]["sft_loss"]
    for table in (RECORDED_PPO, RECORDED_RLOO, RECORDED_SFT):
        lrs = [u["lr"] for u in table]
        assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def _print_tables() -> None:  # pragma: no cover - a recording helper, run by hand
    import tempfile

    from tests.conftest import build_synthetic

    with tempfile.TemporaryDirectory() as root:
        task = build_synthetic(root)
        runs = {
            "RECORDED_PPO": run_rl(task, PPOTrainer, PPO_CFG, f"{root}/ppo"),
            "RECORDED_RLOO": run_rl(task, RLOOTrainer, RLOO_CFG, f"{root}/rloo"),
            "RECORDED_SFT": run_sft(task, f"{root}/sft"),
        }
        for name, tracker in runs.items():
            print(f"{name}: list[dict] = [")
            for row in tracker.deterministic():
                items = [f"{k!r}: {v!r}," for k, v in sorted(row.items())]
                lines, line = [], "    {"
                for item in items:
                    if len(line) + len(item) + 1 > 116:
                        lines.append(line.rstrip())
                        line = "     "
                    line += item + " "
                print("\n".join([*lines, line.rstrip().rstrip(",") + "},"]))
            print("]")


if __name__ == "__main__":
    _print_tables()
