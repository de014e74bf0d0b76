"""Section 5: the `sampler=vllm` backend (vbon_exp/vllm_backend.py) on the `--size` model at the sampler section's
setting, in a subprocess (CUDA, when vLLM is installed); `vllm_speedup_vs_ours` compares it with our sampler."""

from __future__ import annotations

import statistics
import tempfile
import time

from vbon_exp.bench.scale import Scale, random_gpt2, random_prompts
from vbon_exp.bench.timing import print_json, run_child


def vllm_child(scale: Scale, size: str, dtype: str, reps: int) -> None:
    """Runs in a subprocess: time the `sampler=vllm` backend, print JSON. The torch model stays on the CPU (vLLM
    loads its own copy from the saved directory, so CUDA is first touched by vLLM)."""
    import torch
    import vllm

    import vbon_exp.vllm_backend  # noqa: F401  (registers sampler=vllm)
    from vbon_exp.sampling import SamplingConfig, sample_responses

    model = random_gpt2(scale, size, dtype=dtype)
    prompts = random_prompts(scale, scale.batch, scale.prompt_len, seed=1)
    # no tokenizer exists for the random model: token ids in, token ids out
    cfg = SamplingConfig(temperature=scale.temperature, max_new_tokens=scale.new_tokens, batch_size=scale.batch,
                         backend="vllm", backend_options={"skip_tokenizer_init": True, "gpu_memory_utilization": 0.4})
    generator = torch.Generator().manual_seed(0)

    def call() -> float:
        t0 = time.perf_counter()
        s = sample_responses(model, prompts, 1, cfg, eos_id=None, pad_id=0, generator=generator)
        assert int(s.response_mask.sum()) == scale.tokens, "vLLM did not generate every token"
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        model.config._name_or_path = tmp
        startup = call()  # the engine starts (and compiles) on the first call
        times = [call() for _ in range(reps)]
    print_json({"vllm_tok_s": scale.tokens / statistics.median(times), "vllm_tok_s_best": scale.tokens / min(times),
                "vllm_times_s": times, "vllm_first_call_s": startup, "vllm_version": vllm.__version__})


def vllm_missing(device: str) -> str | None:
    """Why the vLLM section cannot run here, or None when it can."""
    import importlib.util

    if device != "cuda":
        return "vLLM runs on CUDA GPUs only: --device cuda"
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install vllm)"
    return None


def bench_vllm(child_args: list[str], size: str, dtype: str, reps: int) -> dict:
    return run_child([*child_args, "--vllm-child", "--size", size, "--dtype", dtype, "--reps", str(reps)],
                     "vLLM sampler", timeout=900)
