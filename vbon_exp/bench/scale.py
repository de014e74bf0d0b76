"""What the benchmark runs on: random GPT-2s of two sizes with GPT-2's vocabulary, a sampling workload, and the
device helpers every section uses. `TOY` shrinks all of it, for a smoke test of the bench itself (`--toy`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scale:
    """The workload: batch × new tokens at a temperature, from prompts of prompt_len random tokens; the RLOO
    comparison's k, β and learning rate; model sizes by name."""

    vocab: int = 50257
    batch: int = 64
    new_tokens: int = 48
    prompt_len: int = 16
    temperature: float = 0.7
    rloo_k: int = 4
    beta: float = 0.05
    lr: float = 1e-5
    sizes: dict = field(default_factory=lambda: {
        "tiny": {"n_layer": 2, "n_embd": 128, "n_head": 2},  # 2-layer, 128 wide
        "small": {"n_layer": 12, "n_embd": 768, "n_head": 12},  # GPT-2-small-sized
    })

    @property
    def tokens(self) -> int:
        """Tokens one sampler call draws (no EOS: every row generates every token)."""
        return self.batch * self.new_tokens


REAL = Scale()
TOY = Scale(vocab=97, batch=8, new_tokens=3, prompt_len=4, sizes={
    "tiny": {"n_layer": 1, "n_embd": 16, "n_head": 2}, "small": {"n_layer": 2, "n_embd": 32, "n_head": 2}})

MODEL_NAMES = {"tiny": "tiny GPT-2", "small": "GPT-2-small-sized"}


class BenchSetupError(Exception):
    """The bench cannot run as asked (e.g. --device cuda without CUDA): main prints it on one line, exit status 2."""


def random_gpt2(scale: Scale, size: str, seed: int = 0, device: str = "cpu", dtype: str = "float32"):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=scale.vocab, n_positions=1024, bos_token_id=scale.vocab - 1,
                        eos_token_id=scale.vocab - 1, **scale.sizes[size])
    return GPT2LMHeadModel(config).to(device=device, dtype=getattr(torch, dtype)).eval()


def random_prompts(scale: Scale, n: int, length: int, seed: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, scale.vocab - 1, (n, length), generator=g).tolist()


def check_device(device: str, dtype: str) -> None:
    """Refuse what cannot run (BenchSetupError) before any model is built; warn about what runs but misleads."""
    import sys

    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise BenchSetupError(
            f"--device cuda but torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none, a CPU-only torch'}; visible devices: "
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): install a CUDA build of torch, e.g. make install "
            "TORCH=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128\", or use --device cpu")
    from vbon_exp.cpu_features import cpu_bf16_native, cpu_description

    if device == "cpu" and dtype == "bfloat16" and not cpu_bf16_native():
        print(f"bench: warning: --dtype bfloat16 on this CPU ({cpu_description()}) is emulated, ~20× slower than "
              "float32: these timings say little about either dtype", file=sys.stderr)


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock time covers it (CUDA calls return before they finish)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def reset_gpu_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_gb(device: str) -> dict:
    """{"peak_gpu_mem_gb": the most this process's tensors held since reset_gpu_peak} on CUDA, {} elsewhere."""
    import torch

    return {"peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30} if device == "cuda" else {}


def peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM of its own address space (getrusage's ru_maxrss would include
    the parent's, since Linux keeps it across fork and execve)."""
    from pathlib import Path

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
