"""The RL building blocks (vbon_exp/trainers): GAE, where rewards land, RLOO baselines, masks; checkpoints."""

import torch

from vbon_exp.modeling import Samples
from vbon_exp.trainers.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vbon_exp.trainers.ppo import gae, token_rewards
from vbon_exp.trainers.rl import Rollout, masked_whiten


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
    g = torch.Generator().manual_seed(0)
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
    from vbon_exp.trainers.rloo import RLOOTrainer

    trainer = RLOOTrainer.__new__(RLOOTrainer)  # only compute_advantages is exercised
    trainer.k, trainer.kl_coef = 3, 0.0
    trainer.cfg = type("C", (), {"whiten_advantages": False})()
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

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"policy": model}, {"update": step, "optimizer": opt.state_dict()})
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]  # keep=2
    path = latest_checkpoint(tmp_path)
    assert path.name == "step-00000003"
    torch.manual_seed(1)
    other = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    state = load_checkpoint(path, {"policy": other})
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert other.lm_head.weight.data_ptr() == other.transformer.wte.weight.data_ptr()  # still tied
    assert state["update"] == 3 and "state" in state["optimizer"]
