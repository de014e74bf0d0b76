"""vbon_exp/analysis/samples.py (`python -m vbon_exp.analysis.samples RUN_DIR ...`): the runs' responses per prompt,
side by side for two runs and stacked for four, each run's extremes, a run dir without samples, and the choice
of an evaluation temperature; on samples.parquet files written here with pandas."""

from __future__ import annotations

import subprocess
import sys

import pytest
from analysis_helpers import REPO_ROOT, point, write_results, write_samples

from vbon_exp.analysis import samples


@pytest.fixture
def two_runs(tmp_path):
    """vBoN (β = 1/3, seed 0) and KL-RL, 3 prompts × 3 samples each; vBoN's rewards p + s, KL-RL's their
    negatives."""
    a, b = tmp_path / "0", tmp_path / "1"
    write_samples(a, "vbon", prompts=3, samples=3)
    write_results(a / "results.jsonl", point("vbon", 1 / 3, 1.0, 1.0, 0.5))
    write_samples(b, "kl_rl", prompts=3, samples=3, reward=lambda p, s: -float(p + s))
    write_results(b / "results.jsonl", point("kl_rl", 0.1, 1.0, 1.0, 0.5, seed=1))
    return a, b


def printed(capsys, *args) -> tuple[int, list[str]]:
    code = samples.main([str(arg) for arg in args])
    return code, capsys.readouterr().out.splitlines()


def test_two_runs_side_by_side(two_runs, capsys):
    a, b = two_runs
    code, lines = printed(capsys, a, b, "--prompts", "2", "--per-run", "2", "--width", "40")
    assert code == 0
    labels = next(line for line in lines if line.startswith("vbon β=0.333 N=4 seed=0"))
    assert labels.split(" │ ")[1].strip() == "kl_rl β=0.1 N=11 seed=1"  # the second column: the second run
    assert len(labels.split(" │ ")[0]) == 40  # a column of --width characters
    for p in (0, 1):  # per prompt, each run's first two responses on the same lines
        for s in (0, 1):
            assert any(f"vbon says {p}.{s}" in line and f"kl_rl says {p}.{s}" in line for line in lines)
        assert any(line.startswith(f"prompt {p}: the prompt number {p}") for line in lines)
    assert not any("says 0.2" in line for line in lines if "│" in line)  # --per-run 2
    assert not any(line.startswith("prompt 2:") for line in lines)  # --prompts 2
    assert any(f"#1  reward {1:.4g}" in line and f"#1  reward {-1:.4g}" in line for line in lines)


def extremes(lines: list[str], label: str, which: str) -> list[str]:
    """The lines of one run's `which` ("highest reward" / "lowest reward") list."""
    start = next(i for i, line in enumerate(lines) if line.startswith(label) and "its extremes" in line)
    first = next(i for i in range(start, len(lines)) if lines[i] == which + ":") + 1
    end = next((i for i in range(first, len(lines)) if set(lines[i]) <= set("─═") or lines[i].endswith(":")),
               len(lines))
    return lines[first:end]


def test_each_runs_extremes(two_runs, capsys):
    a, b = two_runs
    _, lines = printed(capsys, a, b, "--extremes", "1")
    highest = extremes(lines, "vbon", "highest reward")
    assert highest[0].startswith("#2  reward 4") and any("vbon says 2.2" in line for line in highest)
    assert any("prompt 2: the prompt number 2" in line for line in highest)  # which prompt it answered
    lowest = extremes(lines, "vbon", "lowest reward")
    assert lowest[0].startswith("#0  reward 0") and any("vbon says 0.0" in line for line in lowest)
    assert any("kl_rl says 0.0" in line for line in extremes(lines, "kl_rl", "highest reward"))
    _, two = printed(capsys, a, b, "--extremes", "2")
    assert sum("vbon says" in line for line in extremes(two, "vbon", "highest reward")) == 2
    _, none = printed(capsys, a, b, "--extremes", "0")
    assert none and not any("its extremes over" in line or "highest reward" in line for line in none)


def test_a_run_dir_without_samples_gets_one_line(two_runs, tmp_path, capsys):
    a, _ = two_runs
    empty = tmp_path / "empty"
    empty.mkdir()
    code, lines = printed(capsys, a, empty)
    assert code == 0
    assert [line for line in lines if str(empty) in line] == [f"{empty}: no samples.parquet (not a run dir, or a "
                                                              "run written before samples were saved)"]
    assert not any("│" in line for line in lines)  # one run left: stacked
    code = samples.main([str(empty)])
    captured = capsys.readouterr()
    assert code == 2 and "none of the 1 run dir(s) has a samples.parquet" in captured.err


def test_four_runs_are_stacked(tmp_path, capsys):
    dirs = []
    for k in range(4):
        dirs.append(tmp_path / str(k))
        write_samples(dirs[-1], f"method{k}")
    _, lines = printed(capsys, *dirs, "--prompts", "1")
    assert not any("│" in line for line in lines)
    shown = [line for line in lines if line.startswith("method")]
    # no results.jsonl: the samples' own objective and seed
    assert shown[:4] == ["method0 seed=0", "method1 seed=0", "method2 seed=0", "method3 seed=0"]


def test_several_evaluation_temperatures(tmp_path, capsys):
    run = tmp_path / "0"
    write_samples(run, "vbon", temperatures=(0.5, 1.0))
    _, lines = printed(capsys, run)
    assert lines[0] == "note: the runs were evaluated at temperatures 0.5, 1: showing 0.5 (--eval-temperature " \
                       "picks another)"
    assert any("over 4 samples" in line for line in lines)  # one temperature's 2 prompts × 2 samples
    _, lines = printed(capsys, run, "--eval-temperature", "1.0")
    assert not any(line.startswith("note:") for line in lines)
    _, lines = printed(capsys, run, "--eval-temperature", "0.7")
    assert lines == [f"{run}: no samples at evaluation temperature 0.7"]


def test_runs_as_a_module(two_runs):
    a, b = two_runs
    result = subprocess.run([sys.executable, "-m", "vbon_exp.analysis.samples", str(a), str(b)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "vbon says 0.0" in result.stdout and "Warning" not in result.stderr


def test_a_run_with_no_samples_is_said_and_leaves_the_others_ints(two_runs, tmp_path, capsys):
    """BoN from the pool keeps rewards, not responses: its samples.parquet has no rows."""
    import pandas as pd

    a, _ = two_runs
    pool = tmp_path / "pool"
    pool.mkdir()
    pd.DataFrame({"prompt_index": [], "prompt": [], "response": [], "reward": []}).to_parquet(
        pool / "samples.parquet")
    code, lines = printed(capsys, a, pool, "--prompts", "1")
    assert code == 0 and f"{pool}: its samples.parquet holds no samples" in lines
    assert any(line.startswith("#0  reward") for line in lines)  # not #0.0
