"""The real pretrained model as a user gets it: SmolLM2-135M-Instruct converted by `make real-model-weights`
(vbon_exp/gguf_import.py; `make test` runs it first), loaded from its directory, its tokenizer's ids, and one short
LoRA vBoN run on 2 IMDB prompts whose responses are English text. The reward here is VADER (the trained classifiers
of `make real-model` take minutes to build; their accuracies are in docs/results/imdb_smollm2/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_point

from vbon_exp.gguf_import import DEFAULT_OUT

MODEL = REPO_ROOT / DEFAULT_OUT
IMDB = REPO_ROOT.parent / "shared" / "data" / "imdb"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    if not (MODEL / "conversion.json").is_file():
        message = f"{MODEL} is missing: `make real-model-weights` makes it (make test runs it first)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return MODEL


def test_the_converted_model_and_its_tokenizer(model_dir):
    from transformers import AutoConfig, AutoTokenizer

    record = json.loads((model_dir / "conversion.json").read_text())
    assert record["parameters"] == 134_515_008 and record["architecture"] == "LlamaForCausalLM"
    assert record["round_trips"]["exact"] == record["round_trips"]["texts"] > 0
    assert (model_dir / "model.safetensors").is_file() and not list(model_dir.glob("*.bin"))
    config = AutoConfig.from_pretrained(model_dir)
    assert config.num_hidden_layers == 30 and config.hidden_size == 576 and config.vocab_size == 49_152
    assert not hasattr(config, "quantization_config")  # a plain float32 checkpoint, not a GGUF view
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.bos_token_id) == ("<|im_end|>", 2, 1)
    text = "This film's 2nd act <br /> is magnifique, 10/10 — really."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    assert tokenizer("This movie was").input_ids[0] != tokenizer.bos_token_id  # plain continuation, no BOS


@pytest.mark.skipif(not IMDB.is_dir(), reason="needs ../shared/data/imdb")
def test_a_short_lora_vbon_run_continues_the_prompts_in_english(model_dir, tmp_path):
    import pandas as pd

    point = run_point(
        tmp_path / "out", tmp_path / "run", "task=imdb", "model=smollm2_135m", f"model.name_or_path={model_dir}",
        "reward=vader", f"task.data_dir={IMDB}", "task.num_train_prompts=2", "task.num_test_prompts=2",
        "task.max_new_tokens=8", "reference.m=4", "objective=vbon", "algo=rloo", "algo.total_episodes=8",
        "algo.batch_size=8", "algo.lr=1e-4", "train.lora.rank=16", "algo.trainable_layers=2",
        "eval.samples_per_prompt=4", "eval.bootstrap=0", "train.checkpoint_every=0")
    assert point["status"] == "ok" and point["kl"] >= 0 and -1 <= point["reward"] <= 1
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert len(samples) == 8 and samples["prompt"].nunique() == 2
    text = "".join(samples["response"])
    assert text.strip(), "empty responses"
    letters = sum(c.isascii() and (c.isalpha() or c.isspace() or c in ".,;:!?'\"-()0123456789") for c in text)
    assert letters / len(text) > 0.9, text  # English text, not byte soup (a broken conversion gives byte soup)
