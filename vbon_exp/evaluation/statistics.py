"""The standard errors of the evaluation's estimates, and what each covers.

Where only the policy samples are random (reward, a model's KL estimates) the SE is the stratified SE over prompts
(`stratified_mean_se`: prompts are the fixed evaluation set). Where cached reference samples enter (win rates, BoN's
k1 KL through F̂, everything estimated from a BoN pool) it is the SD of `eval.bootstrap` seeded bootstrap replicates
that resample the policy samples and the caches jointly (vbon_exp/bootstrap.py). The results line's `se_covers`
says which, per column."""

from __future__ import annotations

import math

import torch

from vbon_exp.bootstrap import point_and_se, policy_replicates, prompt_table_rows

POLICY_SAMPLES = "policy samples"

# what of the test cache each bootstrapped estimate reads, besides its own samples (policy samples or the BoN pool)
CACHE_SOURCES = {"win_rate": "reference cache", "kl_k1": "reference cache",
                 "win_rate_first": "first reference sample, redrawn from the reference cache"}


def stratified_mean_se(values: torch.Tensor, groups: torch.Tensor) -> tuple[float, float]:
    """Mean over groups of per-group means, and its standard error Σ_g var_g/n_g / G² (samples i.i.d. within a
    group; prompts are the fixed evaluation set)."""
    values, groups = values.double().cpu(), groups.cpu()
    ids = torch.unique(groups)
    means, var_terms = [], []
    for g in ids:
        v = values[groups == g]
        means.append(v.mean())
        var_terms.append(v.var(unbiased=True) / len(v) if len(v) > 1 else torch.tensor(math.nan))
    means_t = torch.stack(means)
    se = math.sqrt(float(torch.stack(var_terms).sum())) / len(ids)
    return float(means_t.mean()), se


def bootstrap_generator(seed: int) -> torch.Generator:
    """The bootstrap's own stream (the evaluation's draws do not move), the same for every estimate of one
    evaluation: a judge identical to the training reward gets the training win rate's SE exactly."""
    return torch.Generator().manual_seed(seed + 7919)


def covers(name: str, replicates: int, samples: str) -> str:
    """What the bootstrap SE of estimate `name` covers: `samples`, and the part of the test cache that it reads."""
    if not replicates:
        return "not estimated (eval.bootstrap=0)"
    sources = " + ".join([samples, *([CACHE_SOURCES[name]] if name in CACHE_SOURCES else [])])
    return f"{sources} (bootstrap B={replicates})"


def cache_bootstrap_ses(rewards: torch.Tensor, prompt_index: torch.Tensor, test_cache, replicates: int, seed: int,
                        se_covers: dict, bon_n: int | None = None) -> dict[str, float]:
    """Bootstrap SEs of the estimates that read the test cache (win rates; BoN's k1 through F̂, with `bon_n`), and
    what they cover (written into `se_covers`)."""
    rows = prompt_table_rows(test_cache.sorted_rewards, test_cache.lengths)
    replicas = policy_replicates(rewards, prompt_index, rows, test_cache.first_rewards, replicates,
                                 bootstrap_generator(seed), bon_n=bon_n)
    out = {}
    for name, values in replicas.items():
        out[f"{name}_se"] = float(point_and_se(values)[1])
        se_covers[f"{name}_se"] = covers(name, replicates, POLICY_SAMPLES)
    return out


def judge_win_rate_se(rewards: torch.Tensor, prompt_index: torch.Tensor, cache, replicates: int,
                      seed: int) -> float:
    """The bootstrap SE of a judge's win rate, its samples and its own scored cache resampled jointly."""
    rows = prompt_table_rows(cache.sorted_rewards, cache.lengths)
    replicas = policy_replicates(rewards, prompt_index, rows, None, replicates, bootstrap_generator(seed))
    return float(point_and_se(replicas["win_rate"])[1])
