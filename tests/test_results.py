"""vbon_exp/results.py: the results line's one writer (whole lines, concurrent writers never interleave, strict JSON)
and one reader, the failed member's line, and the exact frontier a run saves for the analysis."""

from __future__ import annotations

import json
import threading

from vbon_exp.results import (
    RESULTS_FILE,
    append_line,
    failed_line,
    find_files,
    read_exact_frontiers,
    read_lines,
    read_results,
    write_exact_frontier,
    write_result,
)


def test_append_line_writes_whole_lines(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"
    records = [{"i": i, "x": float(i) / 3, "pad": "y" * 2000} for i in range(50)]

    def writer(chunk):
        for r in chunk:
            append_line(path, r)

    threads = [threading.Thread(target=writer, args=(records[k::5],)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    assert sorted(json.loads(line)["i"] for line in lines) == list(range(50))  # every line parses: none interleaved


def test_append_line_makes_non_finite_values_json(tmp_path):
    import torch

    path = tmp_path / "r.jsonl"
    append_line(path, {"nan": float("nan"), "inf": float("inf"), "ninf": -float("inf"), "t": torch.tensor(2.5),
                        "nested": {"a": [float("nan"), 1]}})
    rec = json.loads(path.read_text())  # strict JSON: no NaN / Infinity literals
    assert rec == {"nan": None, "inf": 1e308, "ninf": -1e308, "t": 2.5, "nested": {"a": [None, 1]}}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


def test_the_reader_returns_every_line_with_where_it_came_from(tmp_path, caplog):
    for member in (10, 2):  # natural order: member 2 before member 10
        write_result(tmp_path / str(member), {"objective": "vbon", "seed": member})
    (tmp_path / "2" / RESULTS_FILE).open("a").write("{not json\n\n")
    rows = read_results(tmp_path)
    assert [(r["seed"], r["results_file"], r["line"]) for r in rows] == [(2, "2/results.jsonl", 1),
                                                                        (10, "10/results.jsonl", 1)]
    assert "skipping unreadable line" in caplog.text
    assert [p.parent.name for p in find_files(tmp_path)] == ["2", "10"]
    assert read_lines(tmp_path / "10" / RESULTS_FILE) == [{"objective": "vbon", "seed": 10}]


def test_a_failed_members_line_keeps_its_identity_and_the_error(tmp_path):
    line = failed_line({"objective": "bon", "beta": 0.3}, ValueError("objective.n must be an integer"), 1.5,
                       tmp_path)
    assert line == {"objective": "bon", "beta": 0.3, "status": "failed", "error": "objective.n must be an integer",
                    "error_type": "ValueError", "wall_s": 1.5, "run_dir": str(tmp_path)}
    assert failed_line({}, KeyError(), 0.0, None)["error"] == "KeyError()"


def test_the_exact_frontier_keeps_one_entry_per_evaluation_temperature(tmp_path):
    assert read_exact_frontiers(tmp_path) == []
    curves = {"bon": {"kl": [0.0, 0.3], "reward": [0.0, float("nan")]}}
    write_exact_frontier(tmp_path, 1.0, curves, {"task": {"name": "synthetic"}})
    write_exact_frontier(tmp_path, 0.7, curves, {"task": {"name": "synthetic"}})
    write_exact_frontier(tmp_path, 1.0, curves, {"task": {"name": "synthetic", "seed": 1}})  # replaced, not added
    entries = read_exact_frontiers(tmp_path)
    assert sorted(e["eval_temperature"] for e in entries) == [0.7, 1.0]
    at_one = next(e for e in entries if e["eval_temperature"] == 1.0)
    assert at_one["spec"]["task"]["seed"] == 1 and at_one["curves"]["bon"]["reward"] == [0.0, None]
