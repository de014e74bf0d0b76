"""The evaluation's samples as a table: `samples.parquet` beside `results.jsonl` (readable by `pandas.read_parquet`
and `datasets.load_dataset("parquet", ...)`), and the same rows as a wandb Table.

One row per evaluation sample of the first `eval.samples` test prompts (all of each prompt's samples), at each
evaluation temperature: `prompt_index`, `prompt`, `sample` (its index within the prompt), `response`,
`response_tokens`, `reward`, `judge/<name>` (each judge's score), `logp_policy` and `logp_ref` (log π(y|x) and
log π_ref(y|x) at the evaluation temperature; BoN's log π_BoN is log π_ref plus its k1 term, the tie-aware
estimate of log π_BoN/π_ref from the test cache: vbon_exp/pool_estimators.py `log_bon_ratio_from_counts`),
`kl_term` (the sample's term of the results line's `kl` estimator, `kl_estimator`: its mean over a prompt's samples,
then over prompts, is the line's `kl`), `eval_temperature`, `seed`, `objective`, and for BoN `bon_n` and `bon_kept`
(which of its N candidates it kept). About 0.2–0.4 kB a row on disk for 16–48-token responses (snappy-compressed
parquet; measured in tests/test_evaluation_samples.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from vbon_exp.modeling import Samples
from vbon_exp.results import SAMPLES_FILE

log = logging.getLogger(__name__)


def _within_prompt_index(prompt_index: torch.Tensor) -> torch.Tensor:
    """Each row's position among its prompt's rows (rows need not be contiguous)."""
    out = torch.empty_like(prompt_index)
    for p in torch.unique(prompt_index).tolist():
        rows = (prompt_index == p).nonzero().flatten()
        out[rows] = torch.arange(len(rows))
    return out


def sample_rows(task, samples: Samples, *, kl_term: torch.Tensor, kl_estimator: str, logp_policy=None,
                logp_ref=None, judge_scores: dict | None = None, max_prompts: int | None = None) -> pd.DataFrame:
    """The rows of `samples` of the first `max_prompts` test prompts (all prompts with None; none with 0), with their
    texts decoded by the task's tokenizer."""
    pidx = samples.prompt_index.cpu()
    keep = torch.ones_like(pidx, dtype=torch.bool) if max_prompts is None else pidx < max_prompts
    rows = keep.nonzero().flatten()
    picked = samples.select(rows.to(samples.prompt_index.device))
    mask = picked.response_mask.cpu().bool()
    ids = picked.response_ids.cpu()
    responses = task.tokenizer.batch_decode([ids[i][mask[i]].tolist() for i in range(len(picked))],
                                            skip_special_tokens=True) if len(picked) else []
    prompt_text = {int(p): task.prompt_text("test", int(p)) for p in torch.unique(pidx[rows]).tolist()}
    columns = {
        "prompt_index": pidx[rows].numpy(),
        "prompt": [prompt_text[int(p)] for p in pidx[rows].tolist()],
        "sample": _within_prompt_index(pidx)[rows].numpy(),
        "response": responses,
        "response_tokens": mask.sum(-1).numpy(),
        "reward": picked.rewards.cpu().double().numpy(),
    }
    for name, scores in (judge_scores or {}).items():
        columns[f"judge/{name}"] = scores.cpu().double()[rows].numpy()
    for name, values in (("logp_policy", logp_policy), ("logp_ref", logp_ref)):
        columns[name] = values.cpu().double()[rows].numpy() if values is not None else [None] * len(rows)
    columns["kl_term"] = kl_term.cpu().double()[rows].numpy()
    columns["kl_estimator"] = kl_estimator
    for name in ("bon_n", "bon_kept"):
        if name in samples.extras:
            columns[name] = samples.extras[name].cpu()[rows].numpy()
    return pd.DataFrame(columns)


def write_samples(run_dir: Path, frames: list[pd.DataFrame], tracker=None) -> Path | None:
    """All the evaluation's rows in `<run_dir>/samples.parquet` (written whole, atomically, with the schema even
    when there are no rows) and, with a tracker, as the wandb Table `samples`."""
    from vbon_exp.storage import atomic_write_bytes

    frame = pd.concat([f for f in frames if f is not None], ignore_index=True) if any(
        f is not None for f in frames) else pd.DataFrame(columns=["prompt_index", "prompt", "response", "reward"])
    path = Path(run_dir) / SAMPLES_FILE
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())
    log.info("wrote %d evaluation samples to %s (%d bytes)", len(frame), path, path.stat().st_size)
    if tracker is not None:
        tracker.log_table("samples", frame)
    return path
