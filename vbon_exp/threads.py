"""How many threads torch computes with on the CPU (`threads` in conf/config.yaml), set once before a run's work.

Why it matters: torch's intra-op pool splits an operation across its threads and waits for the slowest. When the pool
has more threads than there are idle cores — two members of a parallel sweep with two threads each on two cores, or
one run beside any busy process — a thread descheduled by the OS stalls every operation it shares: measured on a
2-core machine, our sampler went from 0.78 s to 8.2 s a call with one core taken by another process.

`auto` therefore takes, in this order:
1. $OMP_NUM_THREADS when it is set (the environment's explicit choice: a cluster's per-task setting, a test suite);
2. else the cores this process may use (its CPU affinity) divided by the launcher's parallel jobs
   (hydra/launcher=joblib runs `n_jobs` members at once), and never more than the cores that other processes leave
   idle when the run starts (a short look at /proc/stat on Linux; 0.2 s);
always at least 1. A number sets the count itself. The chosen count and why are logged, and the results line carries
`threads`: floating-point sums split over another number of threads can differ in their last bits.
"""

from __future__ import annotations

import logging
import os
import time

from vbon_exp.errors import ConfigError

log = logging.getLogger(__name__)

# How long `auto` watches the machine for other processes' load, and from how much of a core on it counts a core as
# busy: 0.5 rounds a fully spinning process (≈ 1.0) and two half-busy ones to one core, a stray daemon (≈ 0.05) to none.
LOAD_WINDOW_S = 0.2
BUSY_CORE_FROM = 0.5


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_busy_s() -> float | None:
    """Seconds the whole machine's CPUs have been busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process and its finished children have used."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class OtherLoad:
    """Cores that other processes keep busy from now on: the machine's busy time (/proc/stat) minus this process's
    and its children's CPU time, per second of wall time. Near 0 on an idle machine."""

    def __init__(self):
        self.busy0 = machine_busy_s()
        self.own0, self.t0 = own_cpu_s(), time.perf_counter()

    def cores(self) -> float | None:
        """The average since construction, or None where the machine's busy time cannot be read."""
        if self.busy0 is None:
            return None
        busy, own, wall = machine_busy_s(), own_cpu_s(), time.perf_counter() - self.t0
        return max(0.0, (busy - self.busy0) - (own - self.own0)) / max(wall, 1e-9)


def other_processes_load(window_s: float = LOAD_WINDOW_S) -> float | None:
    """Cores that other processes keep busy, on average over `window_s` (this process's own time taken out), or None
    where the machine's busy time cannot be read."""
    meter = OtherLoad()
    if meter.busy0 is None:
        return None
    time.sleep(window_s)
    return meter.cores()


def launcher_jobs(launcher: dict | None, cores: int | None = None) -> int:
    """Members a Hydra launcher runs at once: joblib's `n_jobs` (−1 all cores, −2 all but one, ...), else 1."""
    n_jobs = (launcher or {}).get("n_jobs")
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
        return 1
    return max(1, n_jobs if n_jobs > 0 else (usable_cores() if cores is None else cores) + 1 + n_jobs)


def auto_threads(jobs: int, cores: int | None = None, busy: float | None = None) -> tuple[int, str]:
    """The `auto` count (see the module docstring) and the reason, for the log. `busy`: other processes' load in
    cores (None: not measured)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env), f"$OMP_NUM_THREADS={env}"
    cores = usable_cores() if cores is None else cores
    threads = max(1, cores // max(1, jobs))
    reason = f"{cores} usable cores / {jobs} parallel job{'s' if jobs != 1 else ''}"
    busy_cores = int(busy // 1 + (busy % 1 >= BUSY_CORE_FROM)) if busy is not None else 0
    if busy_cores and cores - busy_cores < threads:
        threads = max(1, cores - busy_cores)
        reason += f", {busy:.1f} cores busy with other processes"
    return threads, reason


def resolve_threads(setting, jobs: int = 1) -> tuple[int, str]:
    """`threads` (auto | an integer ≥ 1) → (count, why); `jobs`: processes of this machine working at once (parallel
    sweep members × processes per member)."""
    if setting == "auto":
        cores = usable_cores()
        return auto_threads(jobs, cores, other_processes_load() if cores > 1 else None)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(f"threads must be auto or an integer ≥ 1, got {setting!r}")
    return setting, "threads"


def apply_threads(setting, jobs: int = 1) -> int:
    """Set torch's intra-op threads from `threads`, log the count and why, and return it."""
    import torch

    count, why = resolve_threads(setting, jobs)
    torch.set_num_threads(count)
    log.info("torch uses %d thread%s (%s)", count, "s" if count != 1 else "", why)
    return count
