"""What the CPU computes natively, for precision choices made before any model loads.

bf16 autocast on a CPU without bf16 instructions (AVX-512 BF16 or AMX on x86, BF16 on Arm) emulates every matmul:
measured on a 2-core AVX2-only EPYC, one forward + backward + AdamW step of SmolLM2-135M on 32 × 40 tokens took
237 s under bf16 autocast against 10.4–11.6 s in float32 (~21× slower). With the instructions bf16 is faster than
float32. `VBON_EXP_CPU_BF16=0|1` overrides the detection (tests; a CPU this module misreads)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# x86 flags in /proc/cpuinfo, Arm features ("bf16" in its Features line): either means native bf16 matmuls
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# float32 seconds / bf16-autocast seconds measured on an AVX2-only CPU (module docstring): the slowdown to expect
EMULATED_BF16_SLOWDOWN = 21.0


@lru_cache(maxsize=1)
def _cpuinfo_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 matmul instructions (an Apple M2 or later counts; an unknown CPU does not)."""
    forced = os.environ.get("VBON_EXP_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return True  # Apple silicon from M2 has BF16; torch's CPU kernels use it
    return bool(_cpuinfo_flags() & set(BF16_FLAGS))


def cpu_description() -> str:
    """A short name of the CPU's vector level, e.g. 'AVX2, no bf16 instructions'."""
    try:
        import torch

        level = torch.backends.cpu.get_cpu_capability()
    except Exception:  # torch is optional for this module's callers (config checks)
        level = platform.machine()
    return f"{level}, {'bf16 instructions' if cpu_bf16_native() else 'no bf16 instructions'}"
