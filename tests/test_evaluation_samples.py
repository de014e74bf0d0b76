"""vbon_exp/evaluation/samples_table.py: every evaluation writes samples.parquet beside results.jsonl — one row per
evaluation sample of the first `eval.samples` test prompts, readable by pandas and by `datasets` — whose per-prompt
means, averaged over prompts, are the results line's reward and KL; BoN's rows say which candidate it kept."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import compose_config
from test_tasks import FAST, task_overrides
from tiny_artifacts import artifacts  # noqa: F401  (a fixture)

from vbon_exp.results import RESULTS_FILE, SAMPLES_FILE
from vbon_exp.run import run

COLUMNS = {"prompt_index", "prompt", "sample", "response", "response_tokens", "reward", "logp_policy", "logp_ref",
           "kl_term", "kl_estimator", "eval_temperature", "seed", "objective"}


def _stratified_mean(frame: pd.DataFrame, column: str) -> float:
    return float(frame.groupby("prompt_index")[column].mean().mean())


@pytest.fixture(scope="module")
def imdb_vbon(tmp_path_factory, artifacts):  # noqa: F811
    """An IMDB vBoN run on the tiny models (one update), 4 test prompts × 4 samples, judged by VADER."""
    root = tmp_path_factory.mktemp("imdb-samples")
    cfg = compose_config(root, [*task_overrides("imdb", artifacts), "objective=vbon", "objective.beta=0.5",
                                "algo=rloo", "eval.judges=[vader]", *FAST])
    point = run(cfg, run_dir=root / "run")
    return root / "run", point


def test_an_imdb_vbon_run_writes_its_samples_and_their_means_are_the_results_line(imdb_vbon):
    run_dir, point = imdb_vbon
    frame = pd.read_parquet(run_dir / SAMPLES_FILE)
    assert COLUMNS | {"judge/vader"} <= set(frame.columns)
    assert len(frame) == 4 * 4 and sorted(frame["prompt_index"].unique()) == [0, 1, 2, 3]
    assert sorted(frame["sample"].unique()) == [0, 1, 2, 3]
    line = json.loads((run_dir / RESULTS_FILE).read_text().splitlines()[0])
    assert _stratified_mean(frame, "reward") == pytest.approx(line["reward"], abs=1e-6)
    assert _stratified_mean(frame, "kl_term") == pytest.approx(line["kl"], abs=1e-6)
    assert (frame["kl_estimator"] == line["kl_estimator"]).all() and line["kl_estimator"] == "full"
    assert _stratified_mean(frame, "judge/vader") == pytest.approx(line["judge/vader/reward"], abs=1e-6)
    # k1 per sample is log π_θ − log π_ref: its mean is the line's kl_k1
    frame["k1"] = frame["logp_policy"] - frame["logp_ref"]
    assert _stratified_mean(frame, "k1") == pytest.approx(line["kl_k1"], abs=1e-6)
    assert (frame["eval_temperature"] == line["eval_temperature"]).all() and (frame["objective"] == "vbon").all()
    assert frame["response"].map(len).gt(0).any() and frame["prompt"].str.len().gt(0).all()
    assert (frame["response_tokens"] >= 1).all()


def test_the_samples_file_reads_with_datasets(imdb_vbon):
    import datasets

    run_dir, _ = imdb_vbon
    table = datasets.load_dataset("parquet", data_files=str(run_dir / SAMPLES_FILE), split="train")
    assert table.num_rows == 16 and "response" in table.column_names


def test_sampled_bon_says_which_candidate_it_kept_and_the_cap_limits_the_prompts(tmp_path, artifacts):  # noqa: F811
    cfg = compose_config(tmp_path, [*task_overrides("imdb", artifacts), "objective=bon", "objective.n=3",
                                    "objective.estimate=sample", "eval.samples=2", *FAST])
    point = run(cfg, run_dir=tmp_path / "run")
    frame = pd.read_parquet(tmp_path / "run" / SAMPLES_FILE)
    assert sorted(frame["prompt_index"].unique()) == [0, 1] and len(frame) == 2 * 4  # eval.samples=2 prompts
    assert (frame["bon_n"] == 3).all() and frame["bon_kept"].between(0, 2).all()
    # BoN's log π_BoN is its k1 estimate: log π_ref + the k1 term
    assert (frame["logp_policy"] - frame["logp_ref"] - frame["kl_term"]).abs().max() < 1e-9
    assert point["kl_estimator"] == "k1"


def test_bon_from_the_pool_writes_an_empty_samples_file(tmp_path):
    cfg = compose_config(tmp_path, ["objective=bon", "objective.n=all", "eval.bon_pool_m=16", "reference.m=16",
                                    "wandb.mode=disabled", "device=cpu"])
    run(cfg, run_dir=tmp_path / "run")
    frame = pd.read_parquet(tmp_path / "run" / SAMPLES_FILE)
    assert len(frame) == 0 and {"prompt", "response", "reward"} <= set(frame.columns)


def test_bytes_per_sample_on_disk(imdb_vbon):
    """What the docs state about the size: a few hundred bytes a row for short responses (here 6 tokens)."""
    run_dir, _ = imdb_vbon
    per_row = (run_dir / SAMPLES_FILE).stat().st_size / 16
    print(f"samples.parquet: {per_row:.0f} bytes a row (16 rows: mostly the schema's fixed cost)")
    assert per_row < 2000
