"""Timing that says how far it can be trusted: every timed section keeps its repetitions and reports their minimum
and median, the other processes' load while it ran, and is timed again when that load was high; children (the
sections that measure their own process's memory) run in subprocesses."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from vbon_exp.threads import OtherLoad

# A section during which other processes kept more than this many cores busy is timed again (`--retimes` times at
# most), and the attempt with the least load is kept: 0.2 of a core is a background job, not the OS's murmur.
RETIME_LOAD = 0.2


def spread(times: list[float]) -> dict[str, float]:
    """{"min", "median"} of repeated timings: the minimum is the least disturbed repetition, the median the typical."""
    return {"min": min(times), "median": statistics.median(times)}


def timed(fn, reps: int, synchronize=lambda: None) -> list[float]:
    """Seconds of `reps` calls of fn(rep), after one untimed warm-up call (allocations, kernel selection)."""
    fn(-1)
    times = []
    for rep in range(reps):
        synchronize()
        t0 = time.perf_counter()
        fn(rep)
        synchronize()
        times.append(time.perf_counter() - t0)
    return times


def run_section(name: str, fn, summary: dict, retimes: int = 2, retime_load: float = RETIME_LOAD) -> None:
    """Run one section into `summary`, recording the other processes' load while it ran; a section whose load
    exceeded `retime_load` runs again, up to `retimes` more times, and the attempt with the least load is kept
    (summary["retimed"][name]: every attempt's load). A section that fails is recorded (summary["failed"]) and the
    bench goes on."""
    attempts = []
    t0 = time.perf_counter()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    for attempt in range(1 + retimes):
        meter = OtherLoad()
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 (an unattended GPU run keeps the other sections' numbers)
            traceback.print_exc()
            summary.setdefault("failed", {})[name] = f"{type(err).__name__}: {err}"[:2000]
            break
        load = meter.cores()
        attempts.append((load, result))
        if load is None or load <= retime_load or attempt == retimes:
            break
        print(f"[bench] {name}: other processes kept {load:.2f} cores busy: timing it again", file=sys.stderr,
              flush=True)
    if attempts:
        load, result = min(attempts, key=lambda a: a[0] if a[0] is not None else 0.0)
        summary.update(result)
        summary["machine"].setdefault("other_processes_cores_by_stage", {})[name] = load
        if len(attempts) > 1:
            summary.setdefault("retimed", {})[name] = [a[0] for a in attempts]
    print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def run_child(args: list[str], what: str, timeout: float | None = None) -> dict:
    """`python -m vbon_exp.bench *args` in a subprocess; its numbers are the last stdout line that is a JSON object
    (a library may print its own lines around it)."""
    root = str(Path(__file__).resolve().parents[2])  # this checkout's vbon_exp, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "vbon_exp.bench", *args], capture_output=True, text=True,
                          check=False, timeout=timeout, env=env)
    if proc.returncode:
        raise RuntimeError(f"{what} failed (exit status {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{what} printed no JSON line:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def print_json(numbers: dict) -> None:
    """A child's numbers, as the one JSON line run_child reads."""
    print(json.dumps(numbers), flush=True)
