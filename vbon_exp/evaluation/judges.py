"""Evaluation judges (`eval.judges`): other reward models that score the same evaluation samples."""

from __future__ import annotations

import torch

from vbon_exp.evaluation.statistics import POLICY_SAMPLES, covers, judge_win_rate_se, stratified_mean_se
from vbon_exp.modeling import Samples
from vbon_exp.rewards import build_reward, score
from vbon_exp.tasks.lm import require_artifact


def build_judges(judge_configs: dict, task) -> dict:
    """The `eval.judges` reward models by name (vbon_exp.rewards.REWARDS), reading the policy tokenizer's text."""
    device = next(task.reference.parameters()).device
    judges = {}
    for name, judge in judge_configs.items():
        if getattr(judge, "name_or_path", None):
            require_artifact(judge.name_or_path, judge.made_by, f"eval.judges: {name}.name_or_path")
        judges[name] = build_reward(judge, device=device, policy_tokenizer=task.tokenizer, eos_id=task.eos_id)
    return judges


def judge_metrics(samples: Samples, judges: dict, score_batch_size: int = 256, bootstrap: int = 0,
                  seed: int = 0) -> tuple[dict[str, float], dict[str, str], dict[str, torch.Tensor]]:
    """Each judge's view of the same evaluation samples: `judge/<name>/reward` (the judge's mean score) and
    `judge/<name>/win_rate` (the probability that a sample beats a π_ref sample in the judge's eyes, ties ½), each
    with its standard error. `judges`: name -> (reward, cache), where the cache holds π_ref samples of the same
    prompts and sampling settings scored by that judge: the win rate compares like with like, never a judge's score
    with the training reward's. With `bootstrap` replicates the win rate's SE covers that cache too (the same draws
    as the training reward's win rate). Returns the metrics, what each SE covers, and each judge's scores [B]."""
    pidx = samples.prompt_index.cpu()
    out: dict[str, float] = {}
    se_covers: dict[str, str] = {}
    scores: dict[str, torch.Tensor] = {}
    for name, (judge, cache) in judges.items():
        rewards = score(judge, samples, score_batch_size, what=f"evaluation samples (judge {name})")
        scores[name] = rewards
        out[f"judge/{name}/reward"], out[f"judge/{name}/reward_se"] = stratified_mean_se(rewards, pidx)
        win = cache.win_prob(pidx, rewards)
        out[f"judge/{name}/win_rate"], out[f"judge/{name}/win_rate_se"] = stratified_mean_se(win, pidx)
        se_covers[f"judge/{name}/reward_se"] = se_covers[f"judge/{name}/win_rate_se"] = POLICY_SAMPLES
        if bootstrap:
            out[f"judge/{name}/win_rate_se"] = judge_win_rate_se(rewards, pidx, cache, bootstrap, seed)
            se_covers[f"judge/{name}/win_rate_se"] = covers("win_rate", bootstrap, POLICY_SAMPLES)
    return out, se_covers, scores
