"""vbon_exp/trainers/grpo.py and the KL choices of every on-policy trainer (algo.kl_in, algo.kl_estimator,
algo.target_kl): GRPO's and Dr.GRPO's loss against TRL's GRPOTrainer on the same batch, the group advantages, the
estimators' gradients, the adaptive controller and its exact resume, the exact distance to π* on a results line."""

import copy
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from conftest import SHORT_RESPONSES, shifted

from vbon_exp import kl
from vbon_exp.sampling import SamplingConfig
from vbon_exp.settings.algo import RLConfig
from vbon_exp.trainers import TrainConfig
from vbon_exp.trainers.grpo import STD_EPS, DrGRPOTrainer, GRPOTrainer, group_advantages
from vbon_exp.trainers.on_policy import AdaptiveKL

SAMPLING = SamplingConfig(max_new_tokens=5)


def _trainer(cls, task, tmp_path, **algo):
    from accelerate import Accelerator

    cfg = RLConfig(**{"name": "grpo", "lr": 1e-3, "batch_size": 8, "group_size": 4, "ppo_epochs": 1,
                      "total_episodes": 24, "whiten_advantages": False, "kl_in": "loss", "kl_estimator": "k3",
                      **algo})
    policy = copy.deepcopy(task.reference).requires_grad_(True)
    reward = lambda s, lr: s.rewards.double()  # noqa: E731
    return cls(cfg, TrainConfig(checkpoint_every=0, resume=False), policy=policy, task=task, sampling=SAMPLING,
               sequence_reward=reward, kl_coef=0.2, accelerator=Accelerator(cpu=True), run_dir=tmp_path,
               seed=shifted(0))


def _trl_loss(loss_type: str, logp, old, ref, advantages, mask, beta: float, eps: float, max_len: int) -> float:
    """TRL's GRPOTrainer._compute_loss (trl==1.16.0) on our batch: its `self` a stand-in with the attributes that
    function reads, its model's per-token log-probs and entropies ours."""
    from trl.trainer.grpo_trainer import GRPOTrainer as TRLGRPO

    batch, length = mask.shape
    same = lambda x, **_: x  # noqa: E731  (one process: gather and reduce are the identity)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None), loss_type=loss_type, epsilon_low=eps,
        epsilon_high=eps, use_vllm=False, model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        max_completion_length=max_len, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        accelerator=SimpleNamespace(gather=same, reduce=same, gather_for_metrics=same),
    )
    inputs = {"prompt_ids": torch.zeros(batch, 2, dtype=torch.long), "prompt_mask": torch.ones(batch, 2),
              "completion_ids": torch.zeros(batch, length, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref}
    return float(TRLGRPO._compute_loss(fake, None, inputs))


@pytest.mark.parametrize("cls, loss_type", [(GRPOTrainer, "grpo"), (DrGRPOTrainer, "dr_grpo")])
def test_grpo_losses_equal_trls_on_the_same_batch(synthetic_task, tmp_path, cls, loss_type):
    """One batch: our clipped loss with GRPO's k3 KL in the loss equals TRL's GRPOTrainer loss for the same per-token
    log-probs, old and reference log-probs, advantages and mask (float32 sums of ≤ 40 terms: 1e-6 relative). The
    policy is moved after the rollout, so ratios differ from 1 and some are clipped; two responses are cut short
    (as an EOS would), so GRPO's per-response length mean and Dr.GRPO's constant divisor differ."""
    trainer = _trainer(cls, synthetic_task, tmp_path)
    ro = trainer.rollout(0)
    ro.mask[0, 2:] = 0.0
    ro.mask[3, 4:] = 0.0
    ro.logp_old, ro.logp_ref = ro.logp_old * ro.mask, ro.logp_ref * ro.mask
    trainer.compute_advantages(ro)
    with torch.no_grad():
        for p in trainer.model.lm.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(shifted(1))))
    ours, stats = trainer.loss(ro)
    logp = trainer.model(ro.samples, SAMPLING.temperature, chunk=trainer.chunk)[0].logp.detach() * ro.mask
    advantages = ro.advantages[:, 0]  # one value per response (zero-length responses do not occur: fixed length)
    theirs = _trl_loss(loss_type, logp, ro.logp_old, ro.logp_ref, advantages, ro.mask, beta=0.2, eps=0.2,
                       max_len=SAMPLING.max_new_tokens)
    assert stats["clipfrac"] > 0  # the clip is exercised
    assert float(ours.detach()) == pytest.approx(theirs, rel=1e-6, abs=1e-7)


def test_group_advantages_are_relative_to_the_group():
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    centred = group_advantages(returns, 4, scale=False)
    assert torch.allclose(centred, torch.tensor([-2.0, -1.0, 0.0, 3.0, -1.0, -1.0, -1.0, 3.0]))
    scaled = group_advantages(returns, 4, scale=True)
    stds = returns.view(2, 4).std(-1, keepdim=True)  # the sample std (n − 1), as TRL's nanstd
    assert torch.allclose(scaled, (centred.view(2, 4) / (stds + STD_EPS)).reshape(-1))
    assert torch.allclose(scaled.view(2, 4).sum(-1), torch.zeros(2), atol=1e-6)


def test_what_each_estimator_in_the_loss_differentiates_to():
    """On-policy (samples from π_θ itself, all outcomes weighted exactly): the gradient of E[k(π_θ, π_ref)] taken
    through log π_θ only — the loss placement — is 0 for k1, ∇KL(π_θ‖π_ref) for k2, and ∇KL(π_ref‖π_θ) for k3
    (Tang & Munos 2025): what makes the choices land on different policies."""
    torch.manual_seed(0)
    theta, ref = torch.randn(6, requires_grad=True), torch.log_softmax(torch.randn(6), -1)
    logp = torch.log_softmax(theta, -1)
    weights = logp.exp().detach()  # the sampling distribution, not differentiated (the loss sees samples)

    def grad_of(value):
        return torch.autograd.grad(value, theta, retain_graph=True)[0]

    p = logp.exp()
    reverse = (p * (logp - ref)).sum()  # KL(π_θ ‖ π_ref)
    forward = (ref.exp() * (ref - logp)).sum()  # KL(π_ref ‖ π_θ)
    for name, expected in (("k1", torch.zeros(6)), ("k2", grad_of(reverse)), ("k3", grad_of(forward))):
        got = grad_of((weights * kl.KL_ESTIMATORS[name](logp, ref)).sum())
        assert torch.allclose(got, expected, atol=1e-6), name


def test_the_adaptive_controller_moves_beta_towards_the_kl_target():
    """Ziegler et al. 2019: β grows while KL is above the target, shrinks below it, by at most 20% × batch/horizon."""
    control = AdaptiveKL(target=1.0, horizon=100)
    assert control.update(0.5, kl_value=3.0, episodes=10) == pytest.approx(0.5 * (1 + 0.2 * 0.1))  # capped
    assert control.update(0.5, kl_value=0.9, episodes=10) == pytest.approx(0.5 * (1 - 0.1 * 0.1))
    assert control.update(0.5, kl_value=1.0, episodes=10) == 0.5
    beta, kl_value = 0.1, 2.0  # a closed loop where KL falls as β grows (KL ∝ 1/β): β settles where KL = target
    for _ in range(2000):
        beta = control.update(beta, kl_value, episodes=10)
        kl_value = 0.2 / beta
    assert kl_value == pytest.approx(1.0, rel=0.02)


def test_an_adaptive_beta_resumes_exactly(synthetic_task, tmp_path):
    """algo.target_kl: β moves every update and is saved with each checkpoint: 2 updates + resume + 1 gives the β
    and weights of 3 straight."""
    from vbon_exp.trainers import RLOOTrainer

    def run(run_dir, max_updates=None):
        trainer = _trainer(RLOOTrainer, synthetic_task, run_dir, name="rloo", rloo_k=4, kl_in="reward",
                           kl_estimator="k1", target_kl=0.05, kl_horizon=40)
        trainer.train_cfg = TrainConfig(checkpoint_every=1, resume="auto", max_updates=max_updates)
        lm = trainer.train()
        return trainer.kl_coef, [p.detach().clone() for p in lm.parameters()]

    straight_beta, straight = run(tmp_path / "a")
    assert straight_beta != 0.2  # it moved
    run(tmp_path / "b", max_updates=2)
    resumed_beta, resumed = run(tmp_path / "b")
    assert resumed_beta == straight_beta
    assert all(torch.equal(x, y) for x, y in zip(straight, resumed))


def test_a_kl_rl_line_carries_the_exact_kl_to_the_optimum(make_config, tmp_path):
    """`python -m vbon_exp objective=kl_rl algo=grpo` (in process, a short run): the results line has
    exact_kl_to_optimum, below its value at π_ref; with the KL in the reward and k1 it is KL(π_θ‖π*) = the target's."""
    from vbon_exp.config import validate
    from vbon_exp.run import run

    fast = ("train.max_updates=4", "eval.samples_per_prompt=8", "eval.bootstrap=0", "wandb.mode=disabled",
            SHORT_RESPONSES)
    grpo = run(validate(make_config("objective=kl_rl", "algo=grpo", *fast)), run_dir=tmp_path / "grpo")
    assert grpo["algo"] == "grpo" and grpo["exact_kl_to_optimum"] < grpo["exact_kl_to_optimum_init"]
    ppo = run(validate(make_config("objective=kl_rl", *fast)), run_dir=tmp_path / "ppo")
    assert ppo["exact_kl_to_optimum"] == pytest.approx(ppo["exact_kl_to_target"], rel=1e-9)
