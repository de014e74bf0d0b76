"""vbon_exp/adapters.py: LoRA on the policy with the reference as the same base — exact agreement at initialisation,
only adapters train, the merged weights are the adapted model, the saved policy loads both ways, training continues
from a trained adapter with that adapter (not the bare base) as π_ref, and LoRA runs end to end (vBoN's 25% bar,
bit-identical resume, BOND's and iterative BOND's anchors)."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import SHORT_RESPONSES, run_point, shifted, short_training, sizes

from vbon_exp.adapters import (
    AdapterView,
    LoraSettings,
    attach_lora,
    is_adapter_dir,
    load_adapted,
    merged_state_dict,
    policy_weights,
    save_merged,
    served_weights,
)
from vbon_exp.cpu_features import cpu_bf16_native
from vbon_exp.errors import ConfigError
from vbon_exp.logprobs import response_token_stats
from vbon_exp.modeling import Samples


def own_task(task):
    """The session's synthetic task with its own copy of π_ref: LoRA places adapters in the model it is given."""
    return replace(task, reference=copy.deepcopy(task.reference))


def all_responses(task, prompt: int = 0) -> Samples:
    return task.oracle.all_pairs(prompt)


def randomise_adapter(model, scale: float = 0.3, seed: int = 0) -> None:
    """Give B a nonzero value (a fresh adapter has B = 0): a stand-in for a trained adapter."""
    g = torch.Generator().manual_seed(shifted(seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_at_initialisation_policy_and_reference_agree_exactly(synthetic_task):
    """B = 0: every token log-prob of the policy equals the reference's bit for bit and the full KL is exactly 0;
    the reference view reads the same weights (one copy in memory: no parameter is duplicated)."""
    task = own_task(synthetic_task)
    base_ids = {id(p) for p in task.reference.parameters()}
    policy, view = attach_lora(task.reference, LoraSettings(rank=4))
    samples = all_responses(task)
    stats = response_token_stats(policy, samples, 1.0, other=view, kl=True)
    assert torch.equal(stats.logp, stats.other_logp)
    assert torch.equal(stats.kl, torch.zeros_like(stats.kl))
    plain = response_token_stats(synthetic_task.reference, samples, 1.0).logp  # the untouched π_ref
    assert torch.equal(stats.other_logp, plain)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert base_ids <= {id(p) for p in policy.parameters()}  # the base's own tensors, not copies
    # with a nonzero adapter the policy moves and the view does not
    randomise_adapter(policy)
    moved = response_token_stats(policy, samples, 1.0, other=view, kl=True)
    assert moved.kl.sum() > 1e-3 and torch.equal(moved.other_logp, plain)


def test_merged_weights_are_the_adapted_model(synthetic_task, tmp_path):
    """merged_state_dict in a plain model gives the peft model's log-probs (tolerance 1e-4 on log-probs up to ~12:
    W + BA summed in float32 vs the adapter's separate matmul, measured ≤ 3e-5; a wrongly merged layer (transposed,
    unscaled) differs by > 0.1); save_merged writes a from_pretrained-loadable policy and the
    adapter alone, which PeftModel loads onto the base to the same log-probs; the base is never modified."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    task = own_task(synthetic_task)
    policy, _ = attach_lora(task.reference, LoraSettings(rank=4))
    randomise_adapter(policy)
    samples = all_responses(task)
    want = response_token_stats(policy, samples, 1.0).logp
    plain = copy.deepcopy(synthetic_task.reference)
    plain.load_state_dict(merged_state_dict(policy))
    assert torch.allclose(response_token_stats(plain, samples, 1.0).logp, want, atol=1e-4, rtol=0)
    assert set(policy_weights(policy)) == set(plain.state_dict())  # the anchors' and vLLM's names
    # peft's own merge (merge_and_unload, on a copy) gives the same weights (tolerance 1e-6: float32 W + ΔW summed
    # in another order; measured equal)
    peft_merged = copy.deepcopy(policy).merge_and_unload().state_dict()
    ours = merged_state_dict(policy)
    assert set(peft_merged) == set(ours)
    for name, tensor in peft_merged.items():
        assert torch.allclose(ours[name], tensor, atol=1e-6, rtol=0), name
    assert {n for n, _ in served_weights(policy)} == set(plain.state_dict())

    save_merged(policy, tmp_path / "policy", task.tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "policy").eval()
    assert torch.allclose(response_token_stats(loaded, samples, 1.0).logp, want, atol=1e-4, rtol=0)
    assert is_adapter_dir(str(tmp_path / "policy" / "adapter")) and not is_adapter_dir(str(tmp_path / "policy"))
    base = copy.deepcopy(synthetic_task.reference)
    again = PeftModel.from_pretrained(base, tmp_path / "policy" / "adapter").eval()
    assert torch.allclose(response_token_stats(again, samples, 1.0).logp, want, atol=1e-4, rtol=0)
    untouched = response_token_stats(synthetic_task.reference, samples, 1.0).logp
    with torch.no_grad(), policy.disable_adapter():
        assert torch.equal(response_token_stats(policy, samples, 1.0).logp, untouched)


def test_training_from_a_trained_adapter_keeps_that_adapter_as_the_reference(synthetic_task, tmp_path, caplog):
    """A policy that starts from a trained adapter: the reference is base + that adapter, frozen (its log-probs are
    the adapted model's, not the bare base's), the policy starts equal to it (KL exactly 0), training moves only
    the policy's copy, and the log says which reference applies."""
    task = own_task(synthetic_task)
    trained, _ = attach_lora(task.reference, LoraSettings(rank=4))
    randomise_adapter(trained, seed=1)
    save_merged(trained, tmp_path / "sft", task.tokenizer)
    samples = all_responses(task)
    sft_logp = response_token_stats(trained, samples, 1.0).logp

    reference = load_adapted(str(tmp_path / "sft" / "adapter"), torch.device("cpu"))
    assert torch.allclose(response_token_stats(reference, samples, 1.0).logp, sft_logp, atol=1e-6, rtol=0)
    with caplog.at_level(logging.INFO, logger="vbon_exp.adapters"):
        policy, view = attach_lora(reference, LoraSettings(rank=4))
    assert "frozen copy" in caplog.text and view.adapter == "reference"
    stats = response_token_stats(policy, samples, 1.0, other=view, kl=True)
    assert torch.equal(stats.logp, stats.other_logp) and torch.equal(stats.kl, torch.zeros_like(stats.kl))
    assert torch.allclose(stats.other_logp, sft_logp, atol=1e-6, rtol=0)
    bare = response_token_stats(synthetic_task.reference, samples, 1.0).logp
    assert (bare - sft_logp).abs().max() > 1e-2  # precondition: disabling adapters would give another π_ref
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(".policy." in n for n in trainable)
    randomise_adapter(policy, seed=2)
    after = response_token_stats(policy, samples, 1.0, other=view, kl=True)
    assert after.kl.sum() > 1e-3 and torch.allclose(after.other_logp, sft_logp, atol=1e-6, rtol=0)
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == trainable  # the view froze nothing new


def test_reference_view_serves_nothing_to_push_and_settings_are_checked(synthetic_task):
    task = own_task(synthetic_task)
    policy, view = attach_lora(task.reference, LoraSettings(rank=2))
    assert isinstance(view, AdapterView) and list(served_weights(view)) == []  # the engine's own base weights
    for bad, key in (({"rank": -1}, "train.lora.rank"), ({"rank": 2, "alpha": 0}, "train.lora.alpha"),
                     ({"rank": 2, "dropout": 1.5}, "train.lora.dropout"),
                     ({"rank": 2, "target_modules": []}, "train.lora.target_modules")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            LoraSettings(**bad).check()


# --------------------------------------------------------------------------- end to end


# bf16 autocast where this CPU has bf16 instructions; float32 where it only emulates them (~20× slower, so bf16 is
# refused there without train.allow_slow_bf16: tests/test_cpu_features.py); adapters and checkpointing train either way
LORA_RUN = ("train.mixed_precision=" + ("bf16" if cpu_bf16_native() else "no"), "train.gradient_checkpointing=true",
            "train.lora.rank=8")


@pytest.mark.parametrize("size", sizes(short_training(30)))
def test_lora_vbon_on_the_synthetic_task_meets_the_25_percent_bar(tmp_path, size):
    """`python -m vbon_exp train.mixed_precision=bf16 train.gradient_checkpointing=true train.lora.rank=8`: the
    synthetic vBoN run ends within 25% of its initial exact KL to π_BoN (measured here, full: 0.12 of 1.61, 7.6%;
    short, 30 updates on 3-token responses, over seed shifts 0-3: 10.5-13.3% of 1.60; a policy that does not train
    stays at 100%). Only adapters train: the saved adapter holds only LoRA tensors."""
    point = run_point(tmp_path / "out", tmp_path / "run", *LORA_RUN, f"seed={shifted(0)}", *size)
    assert point["exact_kl_to_target"] <= 0.25 * point["exact_kl_to_target_init"], point
    adapter = tmp_path / "run" / "policy" / "adapter"
    from safetensors.torch import load_file

    names = load_file(str(adapter / "adapter_model.safetensors"))
    assert names and all("lora_" in n for n in names)
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8


def test_lora_resume_is_bit_identical(tmp_path):
    """A LoRA run stopped after 3 of 6 updates and resumed ends with the same adapter and value head, bit for bit,
    as the uninterrupted run; its checkpoints hold only the trainable tensors."""
    common = ("train.lora.rank=4", "algo.total_episodes=384", "train.checkpoint_every=3", "eval.samples_per_prompt=16",
              f"seed={shifted(0)}", SHORT_RESPONSES)
    run_point(tmp_path / "out", tmp_path / "whole", *common)
    run_point(tmp_path / "out", tmp_path / "split", *common, "train.max_updates=3")
    run_point(tmp_path / "out", tmp_path / "split", *common)
    from safetensors.torch import load_file

    def final(run):
        return load_file(str(tmp_path / run / "checkpoints" / "step-00000006" / "policy.safetensors"))

    whole, split = final("whole"), final("split")
    assert whole.keys() == split.keys() and any("value_head" in k for k in whole)
    assert all("lora_" in k or "value_head" in k for k in whole)
    for name in whole:
        assert torch.equal(whole[name], split[name]), name


@pytest.mark.parametrize("objective", ["bond", "bond_iterative"])
def test_bond_anchors_work_with_lora(tmp_path, objective):
    """BOND (its forward-KL term through the adapter) and iterative BOND (its anchor refreshed from the merged
    policy) train with LoRA: the run completes with finite exact metrics and moves toward its target."""
    extra = {"bond": ["objective.jeffreys_weight=0.5"],
             "bond_iterative": ["objective.n=4", "objective.round_n=2", "objective.ref_kl=0.05"]}[objective]
    point = run_point(tmp_path / "out", tmp_path / "run", f"objective={objective}", "train.lora.rank=8",
                      "algo.total_episodes=640", "eval.samples_per_prompt=32", "train.checkpoint_every=0", *extra,
                      f"seed={shifted(0)}", SHORT_RESPONSES)
    assert point["status"] == "ok"
    assert point["exact_kl_to_target"] < point["exact_kl_to_target_init"], point
    if objective == "bond_iterative":
        assert Path(tmp_path / "run" / "policy" / "adapter").is_dir()
        rounds = [k for k in point if k.startswith("exact_kl_to_anchor_bon_")]
        assert rounds and all(point[k] == point[k] for k in rounds)  # finite (not NaN)
