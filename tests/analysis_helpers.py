"""Helpers shared by the tests of vbon_exp/analysis (and tests/test_sweep.py): a brute-force frontier, a PNG check,
hand-made results lines and a hand-made sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vbon_exp.analysis.load import normalise

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def brute_force_frontier(reward, kl) -> np.ndarray:
    """O(n²): on the frontier iff finite and no finite point has reward ≥ and KL ≤ with one strict."""
    reward, kl = np.asarray(reward, float), np.asarray(kl, float)
    finite = np.isfinite(reward) & np.isfinite(kl)
    on = np.zeros(len(reward), bool)
    for i in np.flatnonzero(finite):
        on[i] = not any(
            finite[j] and reward[j] >= reward[i] and kl[j] <= kl[i] and (reward[j] > reward[i] or kl[j] < kl[i])
            for j in range(len(reward))
        )
    return on


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200


def write_results(path: Path, *records: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def point(objective, beta, temperature, reward, kl, seed=0, **extra) -> dict:
    return {"task": "synthetic", "objective": objective, "beta": beta, "n": 1 / beta + 1, "temperature": temperature,
            "m": 512, "seed": seed, "status": "ok", "reward": reward, "reward_se": 0.01, "kl": kl, "kl_se": 0.02,
            "win_rate": min(0.99, 0.5 + reward / 10), "win_rate_se": 0.005, **extra}


def frame(*rows: dict) -> pd.DataFrame:
    """Hand-made results lines: synthetic task, M = 512, temperature 1, seed 0, status ok unless given."""
    return normalise(pd.DataFrame([
        {"task": "synthetic", "m": 512, "temperature": 1.0, "seed": 0, "status": "ok", **row} for row in rows]))


def make_temperature_sweep(tmp_path: Path) -> Path:
    """A hand-made sweep over two temperatures and two β, with a failed member and one blank line."""
    runs = tmp_path / "sweep"
    k = 0
    for temperature in (0.7, 1.0):
        for beta in (1 / 3, 1 / 7):
            n = 1 / beta + 1
            kl_analytic = np.log(n) - (n - 1) / n
            for objective, reward, kl, extra in (
                ("bon", 1.0 + beta + temperature, kl_analytic + 0.05, {"kl_analytic": kl_analytic}),
                ("vbon", 1.1 + beta + temperature, kl_analytic + 0.1, {}),
                ("kl_rl", 1.2 + temperature, kl_analytic + 0.3, {}),
            ):
                write_results(runs / str(k) / "results.jsonl", point(objective, beta, temperature, reward, kl, **extra))
                k += 1
    write_results(runs / str(k) / "results.jsonl", {
        "task": "synthetic", "objective": "bon", "beta": 0.3, "n": 4.33, "seed": 0, "status": "failed",
        "error": "objective.n must be an integer", "error_type": "ConfigError"})
    (runs / "0" / "results.jsonl").open("a").write("\n")
    return runs


# ------------------------------------------------------------------------------------------------ fake wandb runs


def fake_run(name, objective, beta, reward, kl, *, state="finished", job_type="train", flat=False, results_id=None,
             **summary):
    import types

    config = {"task": {"name": "synthetic"}, "objective": {"name": objective, "beta": beta, "n": 1 / beta + 1,
                                                           "bound": "l1" if objective == "vbon" else None},
              "algo": {"name": "ppo"}, "sampling": {"temperature": 1.0}, "reference": {"m": 512}, "seed": 0}
    if results_id is not None:  # what run.py adds beside the config: the results line's own identifying columns
        config["results_id"] = results_id
    if flat:  # some wandb versions hand back flattened keys, with {"value": ...} wrappers
        config = {"task.name": {"value": "synthetic"}, "objective.name": objective, "objective.beta": beta,
                  "objective.n": 1 / beta + 1, "algo.name": "ppo", "sampling.temperature": 1.0,
                  "reference.m": 512, "seed": 0}
    metrics = {"reward": reward, "kl": kl, "win_rate": 0.9, "_runtime": 3.0, "_step": 1, "final/reward": reward,
               "train/loss": 0.1, **summary}
    if reward is None:
        metrics = {"_runtime": 1.0}
    return types.SimpleNamespace(name=name, config=config, summary=metrics, state=state, job_type=job_type,
                                 path=["me", "proj", name])


def fake_runs():
    return [
        fake_run("a", "vbon", 1 / 3, 1.5, 0.7),
        fake_run("b", "bon", 1 / 3, 1.4, 0.6, kl_analytic=0.63,
                 results_id={"objective": "bon", "algo": None, "objective_label": "BoN (sampling)"}),
        fake_run("c", "kl_rl", 1 / 7, 2.0, 1.6, flat=True),
        fake_run("d", "vbon", 1 / 7, None, None, state="crashed"),
        fake_run("e", "vbon", 1 / 7, 1.0, 1.0, job_type="pareto"),  # a pareto run: not a point
    ]


# ------------------------------------------------------------------------------------------------ samples


def write_samples(run_dir: Path, objective: str = "vbon", seed: int = 0, temperatures=(1.0,), prompts: int = 2,
                  samples: int = 2, reward=lambda p, s: float(p + s)) -> pd.DataFrame:
    """`<run_dir>/samples.parquet` as runs write it: `prompts` prompts × `samples` samples per evaluation
    temperature, response "<objective> says <prompt>.<sample>", reward `reward(prompt, sample)`."""
    rows = [{"prompt_index": p, "prompt": f"the prompt number {p}", "sample": s,
             "response": f"{objective} says {p}.{s}", "response_tokens": 3, "reward": reward(p, s),
             "logp_policy": -1.0, "logp_ref": -1.5, "kl_term": 0.5, "kl_estimator": "full", "eval_temperature": t,
             "seed": seed, "objective": objective, "bon_n": None, "bon_kept": None}
            for t in temperatures for p in range(prompts) for s in range(samples)]
    run_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_parquet(run_dir / "samples.parquet")
    return table
