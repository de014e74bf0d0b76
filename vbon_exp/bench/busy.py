"""Section 6 (CPU): our sampler (tiny model) and our RLOO step beside one busy core — a spinning process the bench
starts and stops itself — at `threads: auto` (vbon_exp/threads.py, which sees the busy core) and at 2 threads. The
slowdown is each against the same work on the quiet machine at the bench's own `threads: auto` setting (sections 1
and 2). The target: our sampler at most 2× slower with one busy core, at the auto setting."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

from vbon_exp.bench.rl import ours_rloo_step_times
from vbon_exp.bench.sampler import our_sampler, time_calls
from vbon_exp.bench.scale import Scale, random_gpt2
from vbon_exp.bench.timing import spread

SPIN = "import sys\nprint('spinning', flush=True)\nwhile True:\n    pass\n"


@contextmanager
def busy_core():
    """One core kept busy by another process for the duration (started, seen spinning, then killed)."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "spinning"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def bench_busy(scale: Scale, reps: int, rl_steps: int, quiet: dict) -> dict:
    """The busy-core table's numbers. `quiet`: the summary so far (the sampler and RLOO sections on the quiet
    machine); a slowdown is left out where its quiet number is missing."""
    import torch

    from vbon_exp.threads import OtherLoad, resolve_threads

    before = torch.get_num_threads()
    model = random_gpt2(scale, "tiny")
    out: dict = {}
    try:
        with busy_core():
            meter = OtherLoad()
            auto, why = resolve_threads("auto")
            out.update(busy_auto_threads=auto, busy_auto_reason=why)
            for label, threads in (("auto", auto), ("2", 2)):
                torch.set_num_threads(threads)
                sampler = time_calls({"ours": our_sampler(scale, model, "cpu")}, reps, "cpu")["ours"]
                rloo = ours_rloo_step_times(scale, rl_steps)
                out.update({f"busy_sampler_s_{label}": spread(sampler)["median"],
                            f"busy_sampler_s_{label}_best": spread(sampler)["min"],
                            f"busy_sampler_times_s_{label}": sampler,
                            f"busy_rloo_s_{label}": spread(rloo)["median"],
                            f"busy_rloo_s_{label}_best": spread(rloo)["min"],
                            f"busy_rloo_times_s_{label}": rloo})
            out["busy_other_processes_cores"] = meter.cores()
    finally:
        torch.set_num_threads(before)
    quiet_sampler = quiet.get("sampler_times_s_tiny")
    quiet_rloo = quiet.get("step_times_s_ours")
    for label in ("auto", "2"):
        if quiet_sampler:
            out[f"busy_sampler_slowdown_{label}"] = out[f"busy_sampler_s_{label}"] / spread(quiet_sampler)["median"]
        if quiet_rloo:
            out[f"busy_rloo_slowdown_{label}"] = out[f"busy_rloo_s_{label}"] / spread(quiet_rloo)["median"]
    return out
