"""vbon_exp/plan/ (estimate.py, report.py): a plan for every preset without loading weights, from config files only;
its memory estimate of a GPT-2-small-sized PPO step against the measured peak; hours from a bench summary, or the
rate said missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import CONF_DIR, run_app

from vbon_exp.plan import Step, bench_rates, memory, plan_for, shape_of
from vbon_exp.plan.estimate import BUNDLED

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def preset_plan(name: str, tmp_path, *extra) -> str:
    from hydra import compose, initialize_config_dir

    import vbon_exp.config  # noqa: F401

    overrides = [f"+experiment={name}", f"paths.output_root={tmp_path}", *extra]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        params = cfg.hydra.sweeper.params
        return plan_for(cfg, overrides, params, lambda o: compose("config", overrides=o))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_has_a_plan(preset, tmp_path, monkeypatch):
    """Each preset's plan names every objective it sweeps and a per-GPU peak; nothing is downloaded or loaded
    (the hub is unreachable here: the presets' hub models come from the bundled configs)."""
    monkeypatch.chdir(tmp_path)  # no bench summary here: the rate is said to be missing
    text = preset_plan(preset, tmp_path)
    assert "peak ≈" in text and "GB per GPU" in text
    assert "rate missing" in text
    from omegaconf import OmegaConf

    params = OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml").get("hydra", {}).get("sweeper", {})
    for objective in str(params.get("params", {}).get("objective", "")).split(","):
        if objective:
            assert f"  {objective} (" in text, objective
    # the preset's header quotes this plan's peak
    header = (CONF_DIR / "experiment" / f"{preset}.yaml").read_text()
    quoted = re.search(r"plan=true`, no weights loaded\): ≈ ([\d.]+) GB per GPU", header)
    assert quoted, "the header has its plan line"
    assert f"peak ≈ {quoted.group(1)} GB per GPU" in text, (quoted.group(1), text.splitlines()[-2])


def test_plan_of_the_tldr_preset_from_the_command_line(tmp_path, monkeypatch):
    """`python -m vbon_exp +experiment=tldr_paper plan=true` (the app in this process: conftest.run_app) exits 0 after
    printing the plan (2.8B models)."""
    monkeypatch.chdir(Path(__file__).parents[1])
    done = run_app("+experiment=tldr_paper", "plan=true")
    assert done.returncode == 0, done.stderr
    assert "2.78 B parameters" in done.stdout and "vbon (rl;" in done.stdout


def test_lora_and_checkpointing_shrink_the_plan(tmp_path):
    """On the TL;DR preset's 2.8B models: LoRA drops the policy's float32 copy and its optimizer state, and
    checkpointing the activations; each plan is a smaller peak than the plain one."""
    plain = preset_plan("tldr_paper", tmp_path)
    lora = preset_plan("tldr_paper", tmp_path, "train.lora.rank=16", "train.gradient_checkpointing=true")

    def peak(text):
        return float(text.split("peak ≈ ")[1].split(" GB")[0])

    assert peak(lora) < 0.6 * peak(plain)


def test_hours_come_from_a_bench_summary(tmp_path):
    summary = {"device": "cpu", "dtype": "float32", "settings": {"size": "tiny", "prompt_len": 16, "new_tokens": 48,
                                                                 "cache_new_tokens": 8},
               "machine": {"cpus": 2}, "ppo_episodes_per_s": 10.0, "cache_samples_per_s": 1000.0,
               "bench_model_params": 1_000_000}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    rates = bench_rates(path)
    assert rates["params"] == 1_000_000 and rates["where"] == "2 CPUs (cpu)"
    assert bench_rates(tmp_path / "missing.json") is None
    del summary["bench_model_params"]  # a summary written before the bench recorded its model size
    path.write_text(json.dumps(summary))
    assert bench_rates(path) is None


# --------------------------------------------------------------------------- the estimate against a measurement


@pytest.mark.slow  # a minute or two: a 124M-parameter PPO update on the CPU
def test_memory_estimate_of_a_gpt2_small_ppo_step_is_within_30_percent_of_the_measured_peak():
    """The bench's float32 PPO update of the GPT-2-small-sized model (batch 8, 16 + 32 tokens, one epoch), measured
    in a subprocess as its peak resident memory less what the process held before the models (measured 3.47 GB),
    against the plan's estimate for the same step (3.17 GB: weights, gradients, AdamW, activations, log-prob
    chunks). Bound 30% (the issue's): allocator slack and temporaries are not modelled. Deterministic up to the
    allocator; no timing involved."""
    from transformers import GPT2Config

    from vbon_exp.bench.memory import PPO_SHAPE, run_child
    from vbon_exp.bench.scale import REAL
    from vbon_exp.trainers import TrainConfig

    measured = run_child("ppo", {"size": "small", "variant": "fp32", "device": "cpu"}, toy=False)["peak_bytes"]
    shape = PPO_SHAPE["cpu"]
    config = GPT2Config(vocab_size=REAL.vocab, **REAL.sizes["small"]).to_dict()
    policy = shape_of(config, "GPT-2-small-sized")
    step = Step("rl", shape["batch"], shape["batch"], REAL.prompt_len, shape["new_tokens"], value_head=True)
    estimate = sum(memory(policy, None, step, TrainConfig(), None, None, device="cpu").values())
    assert abs(estimate - measured) <= 0.3 * measured, (estimate / 1e9, measured / 1e9)


@pytest.mark.parametrize("path", sorted(BUNDLED.glob("*.json")), ids=lambda p: p.stem)
@pytest.mark.parametrize("classifier", [False, True], ids=["lm", "classifier"])
def test_parameter_counts_without_torch_equal_transformers_own(path, classifier):
    """vbon_exp/plan/architectures.py counts parameters from config.json alone (so `plan=true` needs no torch); for
    every bundled architecture, as a causal LM and as a sequence classifier, it equals the count of the model
    transformers instantiates on the meta device (vbon_exp.plan.estimate.meta_count), exactly, block included."""
    from vbon_exp.plan.architectures import count_parameters
    from vbon_exp.plan.estimate import meta_count

    config = json.loads(path.read_text())
    ours = count_parameters(config, classifier)
    if ours is None:  # an encoder as a causal LM: no such model (the plan falls back to meta_count, which refuses)
        assert config["model_type"] == "distilbert" and not classifier
        return
    layers = config.get("num_hidden_layers") or config.get("n_layer") or config.get("n_layers")
    assert ours == meta_count(config, classifier, layers)


def test_the_synthetic_tasks_count_equals_its_built_model(synthetic_task):
    from vbon_exp.plan.architectures import count_parameters
    from vbon_exp.settings.task import SyntheticTaskConfig, synthetic_architecture

    params, _ = count_parameters(synthetic_architecture(SyntheticTaskConfig()))
    assert params == sum(p.numel() for p in synthetic_task.reference.parameters())
