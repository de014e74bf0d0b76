"""The RL building blocks (vbon_exp/trainers): GAE, where rewards land, RLOO baselines, masks; checkpoints."""

import pytest
import torch
from conftest import seeded, shifted

from vbon_exp.logprobs import TokenStats
from vbon_exp.modeling import Samples
from vbon_exp.trainers.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vbon_exp.trainers.ppo import gae, token_rewards
from vbon_exp.trainers.rollout import Rollout, masked_whiten


def _rollout(mask, seq_reward, logp_old=None, logp_ref=None):
    b, length = mask.shape
    z = torch.zeros(b, length, dtype=torch.long)
    samples = Samples(torch.arange(b), z[:, :1], torch.ones(b, 1, dtype=torch.long), z, mask.long())
    logp_old = torch.zeros(b, length) if logp_old is None else logp_old
    logp_ref = torch.zeros(b, length) if logp_ref is None else logp_ref
    return Rollout(samples, mask.float(), logp_old * mask, logp_ref * mask, None, seq_reward)


def test_sequence_reward_lands_on_last_real_token_never_on_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float)
    ro = _rollout(mask, torch.tensor([1.0, 2.0, 3.0]))
    r = token_rewards(ro, kl_coef=0.5)
    expected = torch.zeros(3, 5)
    expected[0, 2], expected[1, 4], expected[2, 0] = 1.0, 2.0, 3.0
    assert torch.equal(r, expected)


def test_kl_penalty_is_per_token_and_masked():
    mask = torch.tensor([[1, 1, 0]], dtype=torch.float)
    logp_old = torch.tensor([[-1.0, -2.0, -9.0]])
    logp_ref = torch.tensor([[-1.5, -1.0, -1.0]])
    r = token_rewards(_rollout(mask, torch.tensor([0.0]), logp_old, logp_ref), kl_coef=0.1)
    assert torch.allclose(r, torch.tensor([[-0.1 * 0.5, -0.1 * -1.0, 0.0]]))


def _gae_reference(rewards, values, length, gamma, lam):
    adv = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
        next_v = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv


def test_gae_matches_a_per_sequence_loop_with_padding():
    g = seeded(0)
    lengths = [5, 3, 1, 4]
    mask = torch.zeros(4, 5)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    rewards = torch.randn(4, 5, generator=g) * mask
    values = torch.randn(4, 5, generator=g) * mask
    values_with_garbage = values + (1 - mask) * 100.0  # padding values must not leak into advantages
    adv, ret = gae(rewards, values_with_garbage * mask, mask, gamma=0.9, lam=0.8)
    for i, n in enumerate(lengths):
        ref = _gae_reference(rewards[i].tolist(), values[i].tolist(), n, 0.9, 0.8)
        assert torch.allclose(adv[i, :n], torch.tensor(ref), atol=1e-6)
        assert torch.all(adv[i, n:] == 0) and torch.all(ret[i, n:] == 0)
    assert torch.allclose(ret, (adv + values) * mask)


def test_rloo_baseline_is_the_mean_of_the_others():
    from vbon_exp.settings.algo import RLConfig
    from vbon_exp.trainers.rloo import RLOOTrainer

    trainer = RLOOTrainer.__new__(RLOOTrainer)  # only compute_advantages is exercised
    trainer.k, trainer.kl_coef = 3, 0.0
    trainer.cfg = RLConfig(name="rloo", rloo_k=3, whiten_advantages=False)  # the KL in the reward, k1: the defaults
    mask = torch.ones(6, 2)
    ro = _rollout(mask, torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]))
    trainer.compute_advantages(ro)
    expected = torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0.0])
    assert torch.allclose(ro.advantages[:, 0], expected) and torch.allclose(ro.advantages[:, 1], expected)


def test_masked_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 1000.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)
    assert w[0, 3] == 0
    assert abs(float(w[0, :3].mean())) < 1e-6 and abs(float(w[0, :3].var(unbiased=False)) - 1) < 1e-4


def test_checkpoint_roundtrip_tied_weights_and_pointer(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(shifted(0))
    model = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"policy": model}, {"update": step, "optimizer": opt.state_dict()})
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]  # keep=2
    path = latest_checkpoint(tmp_path)
    assert path.name == "step-00000003"
    torch.manual_seed(shifted(1))
    other = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    state = load_checkpoint(path, {"policy": other})
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert other.lm_head.weight.data_ptr() == other.transformer.wte.weight.data_ptr()  # still tied
    assert state["update"] == 3 and "state" in state["optimizer"]


# --------------------------------------------------------------------------- freeze_lower_layers


def _tiny_causal_lm(arch: str):
    """Three-block models of the architectures freeze_lower_layers knows (GPT-2 tied and untied, Llama, GPT-NeoX)."""
    import transformers as tf

    torch.manual_seed(shifted(0))
    if arch.startswith("gpt2"):
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=3, n_head=2,
                                                tie_word_embeddings=arch == "gpt2"))
    small = {"vocab_size": 11, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3,
             "num_attention_heads": 2, "bos_token_id": 0, "eos_token_id": 0}
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=2, **small))
    return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**small))


FROZEN_LAYOUT = {  # (prefix of block i, final norm prefix)
    "gpt2": ("transformer.h.{}.", "transformer.ln_f."),
    "gpt2-untied": ("transformer.h.{}.", "transformer.ln_f."),
    "llama": ("model.layers.{}.", "model.norm."),
    "gpt_neox": ("gpt_neox.layers.{}.", "gpt_neox.final_layer_norm."),
}


@pytest.mark.parametrize("arch", list(FROZEN_LAYOUT))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_freeze_lower_layers_trains_exactly_the_top_blocks_and_the_final_norm(arch, k):
    from vbon_exp.trainers.shared import freeze_lower_layers

    model = _tiny_causal_lm(arch)
    block, norm = FROZEN_LAYOUT[arch]
    freeze_lower_layers(model, k)
    trainable_prefixes = tuple(block.format(i) for i in range(3 - k, 3)) + (norm,)
    names = [name for name, _ in model.named_parameters()]
    expected = {name for name in names if name.startswith(trainable_prefixes)}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected
    # embeddings and the LM head are frozen, tied (gpt2) or untied (the others: today an untied head is not trained)
    assert not any(p.requires_grad for name, p in model.named_parameters() if "emb" in name or "wte" in name
                   or "wpe" in name or "lm_head" in name or "embed_out" in name)
    assert not model.get_input_embeddings().weight.requires_grad
    assert not model.get_output_embeddings().weight.requires_grad
    assert any(name.startswith(norm) for name in expected)  # precondition: the layout names real parameters


@pytest.mark.parametrize("arch", list(FROZEN_LAYOUT))
def test_freeze_lower_layers_none_leaves_everything_trainable(arch):
    from vbon_exp.trainers.shared import freeze_lower_layers

    model = _tiny_causal_lm(arch)
    freeze_lower_layers(model, None)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_lower_layers_unknown_architecture_names_the_config_key():
    from vbon_exp.trainers.shared import freeze_lower_layers

    class Mystery(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])

    model = Mystery()
    with pytest.raises(ValueError, match=r"algo\.trainable_layers.*Mystery"):
        freeze_lower_layers(model, 1)
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen on the way to the error


@pytest.mark.parametrize("k", [5, 0, -1])
def test_freeze_lower_layers_outside_one_to_the_block_count_is_an_error(k):
    """A slice with a negative start used to train fewer blocks than asked (k=5 of 3 trained 2) or none."""
    from vbon_exp.trainers.shared import freeze_lower_layers

    model = _tiny_causal_lm("gpt2")  # 3 blocks
    with pytest.raises(ValueError, match=r"algo\.trainable_layers"):
        freeze_lower_layers(model, k)
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen on the way to the error


def test_trainer_with_trainable_layers_changes_only_the_top_block(synthetic_task, tmp_path):
    """One PPO update with algo.trainable_layers=1 on the synthetic 2-block GPT-2: embeddings, LM head and block 0
    are bit-for-bit unchanged; block 1 and the final norm moved; the optimiser holds only the trainable tensors."""
    import copy

    from accelerate import Accelerator

    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import PPOTrainer, RLConfig, TrainConfig

    policy = copy.deepcopy(synthetic_task.reference).requires_grad_(True)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    cfg = RLConfig(lr=1e-3, batch_size=8, num_minibatches=2, ppo_epochs=1, total_episodes=16, trainable_layers=1)
    trainer = PPOTrainer(cfg, TrainConfig(checkpoint_every=0, resume=False, max_updates=1), policy=policy,
                         task=synthetic_task, sampling=SamplingConfig(max_new_tokens=5),
                         sequence_reward=lambda s, lr: s.rewards.double(), kl_coef=0.1,
                         accelerator=Accelerator(cpu=True), run_dir=tmp_path, seed=shifted(0))
    lm_group = trainer.optimizer.param_groups[0]["params"]
    assert {id(p) for p in lm_group} == {id(p) for p in policy.parameters() if p.requires_grad}
    trained = trainer.train()
    for name, p in trained.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        if name.startswith(("transformer.h.1.", "transformer.ln_f.")):
            assert p.requires_grad and changed, name
        else:
            assert not p.requires_grad and not changed, name


# --------------------------------------------------------------------------- the clipped PPO loss


class _FixedPolicy(torch.nn.Module):
    """Stands in for PolicyWithValue: per-token log-probs of token 0 and values are leaf parameters, so the loss's
    gradient with respect to each token's log-prob / value can be read off directly."""

    def __init__(self, logp: torch.Tensor, values: torch.Tensor | None):
        super().__init__()
        self.logp = torch.nn.Parameter(logp)
        self.values = None if values is None else torch.nn.Parameter(values)

    def forward(self, samples, temperature, *, chunk=None, entropy=False, other=None, kl=False):
        others = torch.full((*self.logp.shape, 2), -4.0, dtype=self.logp.dtype)
        log_dist = torch.cat([self.logp[..., None], others], dim=-1)
        return TokenStats(self.logp, -(log_dist.exp() * log_dist).sum(-1).detach()), self.values


def _loss_setup(logp_old, ratio, advantages, mask, values_old=None, values=None, returns=None, **cfg):
    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import PPOTrainer, RLConfig

    d = {"dtype": torch.float64}
    logp_old, ratio, advantages, mask = (torch.tensor([x], **d) for x in (logp_old, ratio, advantages, mask))
    logp = logp_old + ratio.log()
    b, length = mask.shape
    z = torch.zeros(b, length, dtype=torch.long)
    samples = Samples(torch.arange(b), z[:, :1], torch.ones(b, 1, dtype=torch.long), z, mask.long())
    v_old = None if values_old is None else torch.tensor([values_old], **d)
    ro = Rollout(samples, mask, logp_old * mask, torch.zeros_like(mask), v_old, torch.zeros(b, **d), advantages,
                 None if returns is None else torch.tensor([returns], **d))
    trainer = PPOTrainer.__new__(PPOTrainer)  # only loss() is exercised
    trainer.cfg, trainer.sampling, trainer.loss_terms = RLConfig(**cfg), SamplingConfig(), []
    trainer.chunk = 0
    trainer.model = _FixedPolicy(logp.clone(), None if values is None else torch.tensor([values], **d))
    return trainer, ro, logp


def test_ppo_policy_clipping_zeroes_the_gradient_only_where_the_clip_binds():
    """Per token (ε = 0.2), with the gradient of the unclipped surrogate −A·ρ as reference:
    ρ > 1+ε with A > 0, and ρ < 1−ε with A < 0: the clipped term is the max → zero gradient;
    inside [1−ε, 1+ε]: the unclipped gradient; outside the band on the pessimistic side (ρ > 1+ε with A < 0, ρ < 1−ε
    with A > 0): the unclipped gradient too (the clip is one-sided); padding: zero."""
    ratio = [1.5, 0.5, 1.1, 0.9, 1.5, 0.5, 1.1]
    adv = [1.0, -1.0, 1.0, -2.0, -1.0, 1.0, 1.0]
    mask = [1, 1, 1, 1, 1, 1, 0]
    logp_old = [-1.0, -0.5, -2.0, -1.5, -0.7, -3.0, -1.0]
    trainer, ro, _ = _loss_setup(logp_old, ratio, adv, mask, clip=0.2)
    loss, stats = trainer.loss(ro)
    loss.backward()
    grad = trainer.model.logp.grad[0]

    logp = trainer.model.logp.detach().clone().requires_grad_(True)
    unclipped = (-ro.advantages * torch.exp(logp - ro.logp_old) * ro.mask).sum() / ro.mask.sum()
    unclipped.backward()
    reference = logp.grad[0]

    clipped, free = [0, 1], [2, 3, 4, 5]
    assert torch.equal(grad[clipped], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(grad[free], reference[free], rtol=1e-12, atol=0)
    assert (reference.abs()[:6] > 0.05).all()  # precondition: unclipped, every real token would have a gradient
    assert grad[6] == 0
    assert float(stats["clipfrac"]) == pytest.approx(4 / 6)  # |ρ − 1| > ε on tokens 0, 1, 4, 5
    expected_pg = sum(max(-a * r, -a * min(max(r, 0.8), 1.2)) for r, a in zip(ratio[:6], adv[:6])) / 6
    assert float(stats["pg_loss"]) == pytest.approx(expected_pg, rel=1e-12)


def test_ppo_value_clipping_zeroes_the_gradient_only_where_the_clip_binds():
    """vf = ½·max((v − R)², (v_clip − R)²), v_clip = v_old + clamp(v − v_old, ±0.2). When v moved more than 0.2 from
    v_old towards R (token 0, 3) the clipped error is the larger: zero gradient. Inside the band (2, 5) and past the
    band away from R or overshooting it (1, 4) the gradient is the unclipped vf_coef·(v − R)/n. Padding: zero."""
    v_old = [0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0]
    v = [0.5, -0.5, 0.1, 0.0, 0.5, 0.05, 0.9]
    returns = [1.0, 1.0, 1.0, -1.0, 0.3, -2.0, 5.0]
    mask = [1, 1, 1, 1, 1, 1, 0]
    n, vf_coef = 6, 0.5
    trainer, ro, _ = _loss_setup([-1.0] * 7, [1.0] * 7, [0.0] * 7, mask, values_old=v_old, values=v,
                                 returns=returns, vf_clip=0.2, vf_coef=vf_coef)
    loss, stats = trainer.loss(ro)
    loss.backward()
    grad = trainer.model.values.grad[0]
    unclipped = torch.tensor([vf_coef * (vi - ri) / n for vi, ri in zip(v, returns)], dtype=torch.float64)
    clipped, free = [0, 3], [1, 2, 4, 5]
    assert torch.equal(grad[clipped], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(grad[free], unclipped[free], rtol=1e-12, atol=0)
    assert (unclipped[clipped].abs() > 0.01).all()  # precondition: unclipped, these would have a gradient
    assert grad[6] == 0
    v_clip = [vo + min(max(vi - vo, -0.2), 0.2) for vo, vi in zip(v_old, v)]
    expected_vf = sum(0.5 * max((vi - ri) ** 2, (vc - ri) ** 2)
                      for vi, vc, ri in zip(v[:6], v_clip[:6], returns[:6])) / n
    assert float(stats["vf_loss"]) == pytest.approx(expected_vf, rel=1e-12)
    assert float(loss.detach()) == pytest.approx(float(stats["pg_loss"]) + vf_coef * expected_vf, rel=1e-12)


# --------------------------------------------------------------------------- learning-rate schedules


def _zero_loss(module):
    """A loss with a (zero) gradient for every trainable tensor: AdamW then leaves the weights as they are."""
    return sum((p * 0).sum() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_rl_schedule_after_k_optimizer_steps(synthetic_task, tmp_path, schedule):
    """PPO with 3 updates × (2 epochs × 2 minibatches) = 12 optimizer steps: after k steps the lr is
    lr·(1 − k/12) (linear, 0 at the end) or lr (constant), in the policy group and (× value_head_lr_scale) the
    value-head group."""
    import copy

    from accelerate import Accelerator

    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import PPOTrainer, RLConfig, TrainConfig

    lr, scale = 1e-3, 4.0
    cfg = RLConfig(lr=lr, schedule=schedule, batch_size=8, num_minibatches=2, ppo_epochs=2, total_episodes=24,
                   value_head_lr_scale=scale)
    trainer = PPOTrainer(cfg, TrainConfig(), policy=copy.deepcopy(synthetic_task.reference).requires_grad_(True),
                         task=synthetic_task, sampling=SamplingConfig(max_new_tokens=5),
                         sequence_reward=lambda s, lr: s.rewards.double(), kl_coef=0.1,
                         accelerator=Accelerator(cpu=True), run_dir=tmp_path, seed=shifted(0))
    total = trainer.num_updates * trainer.steps_per_update
    assert total == 12
    seen = []
    for k in range(total + 1):
        factor = max(0.0, 1 - k / total) if schedule == "linear" else 1.0
        groups = trainer.optimizer.param_groups
        assert groups[0]["lr"] == pytest.approx(lr * factor, rel=1e-12, abs=1e-18), k
        assert groups[1]["lr"] == pytest.approx(lr * scale * factor, rel=1e-12, abs=1e-18), k
        seen.append(groups[0]["lr"])
        if k < total:
            trainer.optimizer_step(_zero_loss(trainer.model), max_grad_norm=1.0)
    if schedule == "linear":
        assert seen[0] == lr and seen[total // 2] == pytest.approx(lr / 2) and seen[-1] == 0.0
    else:
        assert set(seen) == {lr}


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_sft_schedule_after_k_optimizer_steps(synthetic_task, tmp_path, schedule):
    """SFT over 10 pairs in batches of 4 for 2 epochs: 3 steps an epoch, 6 in all."""
    import copy

    from accelerate import Accelerator

    from vbon_exp.trainers import TrainConfig
    from vbon_exp.trainers.sft import SFTConfig, SFTTrainer

    z = torch.zeros(10, 2, dtype=torch.long)
    data = Samples(torch.zeros(10, dtype=torch.long), z, torch.ones_like(z), z, torch.ones_like(z))
    lr = 2e-3
    trainer = SFTTrainer(SFTConfig(lr=lr, schedule=schedule, batch_size=4, epochs=2), TrainConfig(),
                         policy=copy.deepcopy(synthetic_task.reference).requires_grad_(True), data=data,
                         temperature=1.0, accelerator=Accelerator(cpu=True), run_dir=tmp_path)
    assert trainer.total_steps == 6
    for k in range(7):
        factor = max(0.0, 1 - k / 6) if schedule == "linear" else 1.0
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lr * factor, rel=1e-12, abs=1e-18), k
        if k < 6:
            trainer.optimizer_step(_zero_loss(trainer.model), max_grad_norm=None)


# --------------------------------------------------------------------------- batch semantics


@pytest.mark.parametrize("num_minibatches,ppo_epochs,micro", [(1, 4, None), (2, 3, None), (4, 2, 1), (2, 1, 3)])
def test_rl_optimizer_steps_match_the_batch_formula(synthetic_task, tmp_path, num_minibatches, ppo_epochs, micro):
    """A short PPO run takes exactly updates × ppo_epochs × num_minibatches optimizer steps (counted by AdamW's own
    per-parameter step counter and by the scheduler), whatever the micro-batch size: the paper's defaults give
    4 × 1 / 32 = 0.125 steps per episode, as its table (TRL names) and the seed code's trlx settings do."""
    import copy

    from accelerate import Accelerator

    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import PPOTrainer, RLConfig, TrainConfig

    assert RLConfig().ppo_epochs * RLConfig().num_minibatches / RLConfig().batch_size == 0.125
    cfg = RLConfig(lr=1e-3, batch_size=8, num_minibatches=num_minibatches, ppo_epochs=ppo_epochs,
                   micro_batch_size=micro, total_episodes=16)
    trainer = PPOTrainer(cfg, TrainConfig(checkpoint_every=0),
                         policy=copy.deepcopy(synthetic_task.reference).requires_grad_(True),
                         task=synthetic_task, sampling=SamplingConfig(max_new_tokens=4),
                         sequence_reward=lambda s, lr: s.rewards.double(), kl_coef=0.1,
                         accelerator=Accelerator(cpu=True), run_dir=tmp_path, seed=shifted(0))
    trainer.train()
    expected = 2 * ppo_epochs * num_minibatches  # 16 episodes / batch 8 = 2 updates
    adam_steps = {int(state["step"]) for state in trainer.optimizer.state.values()}
    assert adam_steps == {expected}
    assert trainer.scheduler.last_epoch == expected


@pytest.mark.parametrize("override,key", [
    ({"batch_size": 8, "num_minibatches": 3}, "algo.num_minibatches"),
    ({"adam_betas": (0.9, 1.0)}, "algo.adam_betas"),
    ({"reward_clip": 0.0}, "algo.reward_clip"),
    ({"micro_batch_size": 0}, "algo.micro_batch_size"),
])
def test_rl_config_refuses_bad_batch_and_optimizer_keys(override, key):
    from vbon_exp.errors import ConfigError
    from vbon_exp.trainers import RLConfig

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RLConfig(**override).check()


def test_reward_clip_bounds_the_sequence_reward(synthetic_task, tmp_path):
    """algo.reward_clip=c clamps the objective's sequence reward to [−c, c] before the KL penalty (trlx's
    cliprange_reward): a reward of ±100 reaches the advantages as ±0.5."""
    import copy

    from accelerate import Accelerator

    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import PPOTrainer, RLConfig, TrainConfig

    cfg = RLConfig(batch_size=8, total_episodes=8, reward_clip=0.5)
    trainer = PPOTrainer(cfg, TrainConfig(checkpoint_every=0),
                         policy=copy.deepcopy(synthetic_task.reference), task=synthetic_task,
                         sampling=SamplingConfig(max_new_tokens=4),
                         sequence_reward=lambda s, lr: 100.0 * torch.where(torch.arange(len(s)) % 2 == 0, 1.0, -1.0),
                         kl_coef=0.1, accelerator=Accelerator(cpu=True), run_dir=tmp_path, seed=shifted(0))
    ro = trainer.rollout(0)
    assert sorted(set(ro.seq_reward.tolist())) == [-0.5, 0.5]


def test_the_owner_of_a_checkpoint_directory_removes_what_a_killed_save_left(tmp_path):
    from vbon_exp.trainers.checkpoint import remove_partial_checkpoints

    root = tmp_path / "checkpoints"
    keep = save_checkpoint(root, 3, {"policy": torch.nn.Linear(2, 2)}, {"update": 3})
    (root / ".tmp-step-k2j3h4").mkdir()
    (root / ".tmp-step-k2j3h4" / "policy.safetensors").write_bytes(b"half")
    (root / ".latest.x8y9.tmp").write_text("step-00000004")
    removed = remove_partial_checkpoints(root)
    assert sorted(p.name for p in removed) == [".latest.x8y9.tmp", ".tmp-step-k2j3h4"]
    assert sorted(p.name for p in root.iterdir()) == ["latest", keep.name]
    assert latest_checkpoint(root) == keep and remove_partial_checkpoints(tmp_path / "nowhere") == []


# --------------------------------------------------------------------------- the shared loop (trainers/loop.py)


class _CallTracker:
    """A fake tracker: every `log(metrics, step)` call, in order."""

    def __init__(self):
        self.calls: list[tuple[int, dict]] = []

    def log(self, metrics: dict, step: int) -> None:
        self.calls.append((step, dict(metrics)))


def _loop_trainer(kind: str, task, train_cfg, run_dir, tracker=None):
    """A tiny trainer of each loop, 3 units in all: PPO (24 episodes in updates of 8), SFT and DPO (6 sequences /
    pairs in batches of 2)."""
    import copy

    from accelerate import Accelerator

    from vbon_exp.pairs import PairSet
    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import PPOTrainer, RLConfig
    from vbon_exp.trainers.preference_loop import PairLoss, PreferenceTrainConfig, PreferenceTrainer
    from vbon_exp.trainers.sft import SFTConfig, SFTTrainer

    policy = copy.deepcopy(task.reference).requires_grad_(True)
    common = {"accelerator": Accelerator(cpu=True), "run_dir": run_dir, "tracker": tracker, "seed": shifted(0)}
    data = task.oracle.all_pairs(0)
    if kind == "ppo":
        cfg = RLConfig(lr=1e-3, batch_size=8, num_minibatches=2, ppo_epochs=1, total_episodes=24)
        return PPOTrainer(cfg, train_cfg, policy=policy, task=task, sampling=SamplingConfig(max_new_tokens=4),
                          sequence_reward=lambda s, lr: s.rewards.double(), kl_coef=0.1, **common)
    if kind == "sft":
        return SFTTrainer(SFTConfig(lr=1e-3, batch_size=2), train_cfg, policy=policy, data=data.select(slice(0, 6)),
                          temperature=1.0, **common)
    pairs = PairSet(data.select(slice(0, 6)), data.select(slice(6, 12)), n=2, dropped=0)
    return PreferenceTrainer(PreferenceTrainConfig(lr=1e-3, batch_size=2), train_cfg, policy=policy,
                             reference=task.reference, pairs=pairs, loss=PairLoss("dpo", beta=0.1), temperature=1.0,
                             **common)


LOGGED_KEYS = {
    "sft": {"sft_loss", "lr", "update_tok_s"},
    "preference": {"loss", "margin", "chosen_reward", "rejected_reward", "accuracy", "lr", "update_tok_s"},
}


@pytest.mark.parametrize("kind", ["sft", "preference"])
def test_offline_loops_log_every_log_every_steps_and_at_the_last(synthetic_task, tmp_path, kind):
    """train.log_every=2 over 3 steps logs at steps 2 and 3 (the last), each time that step's own values: those an
    every-step run (log_every=1) logs at the same steps."""
    from vbon_exp.trainers import TrainConfig

    runs = {}
    for every in (1, 2):
        tracker = _CallTracker()
        _loop_trainer(kind, synthetic_task, TrainConfig(checkpoint_every=0, resume=False, log_every=every),
                      tmp_path / str(every), tracker).train()
        runs[every] = tracker.calls
    assert [step for step, _ in runs[1]] == [1, 2, 3]
    assert [step for step, _ in runs[2]] == [2, 3]
    every_step = dict(runs[1])
    for step, metrics in runs[2]:
        assert set(metrics) == {f"train/{k}" for k in LOGGED_KEYS[kind]}
        assert all(isinstance(v, float) for v in metrics.values())
        for key, value in metrics.items():
            if key != "train/update_tok_s":  # a timing
                assert value == every_step[step][key], (step, key)


@pytest.mark.parametrize("kind", ["ppo", "sft", "preference"])
def test_max_updates_stops_every_loop_at_the_same_point(synthetic_task, tmp_path, kind):
    """Every trainer stops at min(its units, train.max_updates), logs and checkpoints there, and a later run with a
    larger max_updates resumes from that checkpoint; a limit past the run's length stops at its end, 0 trains
    nothing."""
    from vbon_exp.trainers import TrainConfig

    def run(run_dir, max_updates, log_every=5):
        tracker = _CallTracker()
        cfg = TrainConfig(checkpoint_every=0, resume="auto", log_every=log_every, max_updates=max_updates)
        trainer = _loop_trainer(kind, synthetic_task, cfg, run_dir, tracker)
        trainer.train()
        assert len(trainer.checksums) == 1  # the replica check ran
        return trainer, [step for step, _ in tracker.calls]

    trainer, logged = run(tmp_path / "a", 2)
    assert (trainer.step, logged) == (2, [2])
    assert latest_checkpoint(tmp_path / "a" / "checkpoints").name == "step-00000002"
    trainer, logged = run(tmp_path / "a", 7)  # resumes at 2; stops at the run's 3 units
    assert (trainer.step, logged) == (3, [3])
    assert latest_checkpoint(tmp_path / "a" / "checkpoints").name == "step-00000003"
    trainer, logged = run(tmp_path / "b", None, log_every=1)
    assert (trainer.step, logged) == (3, [1, 2, 3])
    trainer, logged = run(tmp_path / "c", 0)
    assert (trainer.step, logged) == (0, [])
    assert latest_checkpoint(tmp_path / "c" / "checkpoints") is None


@pytest.mark.parametrize("kind", ["sft", "preference"])
def test_adapter_dropout_applies_in_the_offline_loops_and_resumes_exactly(synthetic_task, tmp_path, kind):
    """train.lora.dropout > 0 in SFT and the preference loop: the adapters' dropout is on while training (the losses
    differ from a dropout-0 run of the same data), the base model's stays off, and its masks come from (seed, step):
    3 steps in one go and 2 + 1 across a resume end in the same adapter weights, bit for bit."""
    import copy

    from vbon_exp.adapters import LoraSettings, attach_lora
    from vbon_exp.trainers import TrainConfig

    def trained(run_dir, dropout, max_updates=None):
        task = copy.copy(synthetic_task)
        lora = LoraSettings(rank=4, dropout=dropout)
        base = copy.deepcopy(synthetic_task.reference)
        task.reference = attach_lora(base, lora, seed=shifted(0))[0]
        tracker = _CallTracker()
        cfg = TrainConfig(checkpoint_every=1, resume="auto", lora=lora, max_updates=max_updates)
        trainer = _loop_trainer(kind, task, cfg, run_dir, tracker)
        lm = trainer.train()
        adapters = {k: v.detach().clone() for k, v in lm.named_parameters() if "lora_" in k}
        return trainer, adapters, [m for _, m in tracker.calls]

    plain, plain_weights, plain_logs = trained(tmp_path / "plain", 0.0)
    whole, whole_weights, whole_logs = trained(tmp_path / "whole", 0.5)
    assert not plain.adapter_dropout and whole.adapter_dropout
    loss = "train/sft_loss" if kind == "sft" else "train/loss"
    # step 1 agrees (LoRA's B starts at 0: no adapter output to drop), but its gradient on B went through the
    # dropped input, so from step 2 on the two runs differ
    assert plain_logs[0][loss] == whole_logs[0][loss] and plain_logs[1][loss] != whole_logs[1][loss]
    assert not any(m.training for name, m in whole.unwrapped.named_modules() if "lora_dropout" not in name
                   and isinstance(m, torch.nn.Dropout))
    trained(tmp_path / "resumed", 0.5, max_updates=2)
    _, resumed_weights, _ = trained(tmp_path / "resumed", 0.5)
    assert resumed_weights.keys() == whole_weights.keys() and len(whole_weights) > 0
    assert all(torch.equal(resumed_weights[k], whole_weights[k]) for k in whole_weights)
