"""`threads` (vbon_exp/threads.py): torch's CPU thread count from the environment, the cores, the launcher's parallel
jobs and the other processes' load; the load read from /proc/stat's counters (faked here: no timing in a test)."""

from __future__ import annotations

import pytest

from vbon_exp import threads
from vbon_exp.errors import ConfigError


@pytest.fixture
def no_omp_env(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("cores, jobs, busy, expected", [
    (2, 1, None, 2),  # a single run on an idle 2-core machine: both cores
    (2, 1, 0.05, 2),  # a stray daemon is not a busy core
    (2, 1, 0.84, 1),  # one core taken by another process: one thread, never a stalled second one
    (2, 2, None, 1),  # two sweep members share the cores
    (16, 3, None, 5),
    (4, 1, 1.6, 2),  # two busy cores of four
    (2, 1, 3.0, 1),  # everything busy: still one thread
    (1, 4, None, 1),
])
def test_auto_divides_the_idle_cores_between_the_jobs(no_omp_env, cores, jobs, busy, expected):
    count, why = threads.auto_threads(jobs, cores, busy)
    assert count == expected
    assert f"{cores} usable cores / {jobs} parallel job" in why
    assert ("busy with other processes" in why) == (expected < max(1, cores // jobs))


def test_omp_num_threads_is_the_environments_choice(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.auto_threads(jobs=4, cores=2, busy=2.0) == (3, "$OMP_NUM_THREADS=3")
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # empty: unset
    assert threads.auto_threads(jobs=1, cores=2, busy=None)[0] == 2


@pytest.mark.parametrize("launcher, cores, expected", [
    (None, 8, 1), ({}, 8, 1), ({"n_jobs": 2}, 8, 2), ({"n_jobs": -1}, 8, 8), ({"n_jobs": -2}, 8, 7),
    ({"n_jobs": -20}, 8, 1), ({"n_jobs": None}, 8, 1), ({"n_jobs": True}, 8, 1),
])
def test_launcher_jobs_reads_joblibs_n_jobs(launcher, cores, expected):
    assert threads.launcher_jobs(launcher, cores) == expected


def test_other_processes_load_takes_this_process_out(monkeypatch):
    """Machine busy time grows by 1.5 s over a 1 s window of which this process used 0.5 s: others kept 1.0 core."""
    machine, own = iter([100.0, 101.5]), iter([7.0, 7.5])
    clock = iter([10.0, 11.0])
    monkeypatch.setattr(threads, "machine_busy_s", lambda: next(machine))
    monkeypatch.setattr(threads, "own_cpu_s", lambda: next(own))
    monkeypatch.setattr(threads.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert threads.other_processes_load() == pytest.approx(1.0)
    monkeypatch.setattr(threads, "machine_busy_s", lambda: None)  # no /proc/stat: not measured
    monkeypatch.setattr(threads, "own_cpu_s", lambda: 8.0)
    monkeypatch.setattr(threads.time, "perf_counter", lambda: 12.0)
    assert threads.other_processes_load() is None


def test_the_machine_counters_are_read_here():
    """On Linux the counters exist and only grow; elsewhere the load is simply not measured."""
    first = threads.machine_busy_s()
    if first is None:
        pytest.skip("no /proc/stat on this system")
    assert threads.machine_busy_s() >= first >= 0 and threads.own_cpu_s() > 0


def test_resolve_takes_a_number_as_it_is_and_refuses_nonsense(no_omp_env, monkeypatch):
    assert threads.resolve_threads(3) == (3, "threads")
    monkeypatch.setattr(threads, "other_processes_load", lambda: 0.0)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert threads.resolve_threads("auto", jobs=2)[0] == 2
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ConfigError, match="threads must be auto or an integer"):
            threads.resolve_threads(bad)


def test_apply_sets_torchs_thread_count(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_bad_threads_value_is_one_clear_error(make_config):
    from vbon_exp.config import validate

    for bad in ("threads=0", "threads=many", "threads=1.5"):
        with pytest.raises(ConfigError, match="threads"):
            validate(make_config(bad))
    assert validate(make_config("threads=3")).run.threads == 3
