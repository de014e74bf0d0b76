"""Parameter counts of the architectures the presets use, from a config.json as a plain dict: no torch, no
transformers, so `plan=true` answers in about a second. One pure function per `model_type` (a small registry, as
the KL estimators are); each is checked against transformers' own count on the meta device (tests/test_plan.py).
A model type not here falls back to that meta-device count (vbon_exp/plan/estimate.py shape_of)."""

from __future__ import annotations

from typing import Callable

# model_type -> (config dict, classifier?) -> (total parameters, parameters of one transformer block)
ARCHITECTURES: dict[str, Callable[[dict, bool], tuple[int, int] | None]] = {}


def register_architecture(model_type: str):
    def add(fn):
        ARCHITECTURES[model_type] = fn
        return fn

    return add


def num_labels(config: dict) -> int:
    """The classifier's outputs as transformers reads them: id2label's size, else num_labels, else 2."""
    if config.get("id2label"):
        return len(config["id2label"])
    return int(config.get("num_labels") or 2)


def _head(config: dict, classifier: bool, hidden: int, vocab: int, tied_default: bool) -> int:
    """A classifier's score layer (hidden × labels, no bias), or an LM head unless tied to the embeddings."""
    if classifier:
        return hidden * num_labels(config)
    tied = config.get("tie_word_embeddings", tied_default)
    return 0 if tied else hidden * vocab


@register_architecture("gpt2")
def gpt2(config: dict, classifier: bool) -> tuple[int, int]:
    h, v, inner = config["n_embd"], config["vocab_size"], config.get("n_inner") or 4 * config["n_embd"]
    block = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * inner + inner) + (inner * h + h)
    embeddings = v * h + config["n_positions"] * h
    return embeddings + config["n_layer"] * block + 2 * h + _head(config, classifier, h, v, True), block


@register_architecture("gpt_neox")
def gpt_neox(config: dict, classifier: bool) -> tuple[int, int]:
    h, v, inner = config["hidden_size"], config["vocab_size"], config["intermediate_size"]
    bias = h if config.get("attention_bias", True) else 0
    block = 4 * h + (3 * h * h + 3 * bias) + (h * h + bias) + (h * inner + inner) + (inner * h + h)
    return v * h + config["num_hidden_layers"] * block + 2 * h + _head(config, classifier, h, v, False), block


@register_architecture("llama")
def llama(config: dict, classifier: bool) -> tuple[int, int]:
    h, v, inner = config["hidden_size"], config["vocab_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads") or heads
    attn_bias, mlp_bias = bool(config.get("attention_bias")), bool(config.get("mlp_bias"))
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o; k, v
    attention += (heads * head_dim + 2 * kv * head_dim + h) if attn_bias else 0
    mlp = 3 * h * inner + ((2 * inner + h) if mlp_bias else 0)
    block = attention + mlp + 2 * h
    return v * h + config["num_hidden_layers"] * block + h + _head(config, classifier, h, v, True), block


@register_architecture("distilbert")
def distilbert(config: dict, classifier: bool) -> tuple[int, int] | None:
    h, v, inner = config["dim"], config["vocab_size"], config["hidden_dim"]
    block = 4 * (h * h + h) + 2 * h + (h * inner + inner) + (inner * h + h) + 2 * h
    embeddings = v * h + config["max_position_embeddings"] * h + 2 * h
    if not classifier:
        return None  # an encoder: never a policy here
    head = (h * h + h) + (h * num_labels(config) + num_labels(config))  # pre_classifier, classifier
    return embeddings + config["n_layers"] * block + head, block


def count_parameters(config: dict, classifier: bool = False) -> tuple[int, int] | None:
    """(parameters, parameters of one block) of the model `config` describes (its sequence classifier when
    `classifier`), or None when its model_type has no entry here."""
    fn = ARCHITECTURES.get(config.get("model_type"))
    return fn(config, classifier) if fn is not None else None
