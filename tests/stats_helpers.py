"""Goodness-of-fit helpers shared by the sampler tests.

`binned_chisquare` compares sampled outcome indices with an exact distribution over an enumerated support:
outcomes are sorted by a key (the reward, so bins are contiguous in reward), cut into ~`n_bins` bins of equal
exact mass, bins with an expected count below `min_expected` are merged into a neighbour, and Pearson's
chi-square is pooled over groups (prompts), each group contributing (its bins − 1) degrees of freedom.

Why such a test is not flaky: every draw comes from a torch.Generator with a fixed seed, so the statistic is a
deterministic number; a correct sampler would fail the p > 1e-3 bar for only 1 in 1000 seeds. The tests also
check the power side (the same samples reject a slightly wrong distribution), so they can fail.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats


def _group_bins(probs: np.ndarray, key: np.ndarray, n_bins: int, n: int, min_expected: float):
    """Bin id (−1 = zero-probability outcome) per outcome and the exact mass per bin, for one group."""
    order = np.argsort(key, kind="stable")
    p_sorted = probs[order]
    mass_before = np.cumsum(p_sorted) - p_sorted
    raw = np.minimum(np.floor(mass_before * n_bins).astype(np.int64), n_bins - 1)
    # drop empty bins, then merge bins whose expected count is too small into the next (the last into the previous)
    _, raw = np.unique(raw, return_inverse=True)
    mass = np.bincount(raw, weights=p_sorted)
    label, acc, new_of_old = 0, 0.0, []
    for b in range(len(mass)):
        new_of_old.append(label)
        acc += mass[b]
        if acc * n >= min_expected:
            label, acc = label + 1, 0.0
    new_of_old = np.array(new_of_old)
    if acc > 0 and label > 0:  # a short tail bin: fold it into the previous one
        new_of_old[new_of_old == label] = label - 1
    merged = new_of_old[raw]
    bin_of_outcome = np.empty(len(probs), dtype=np.int64)
    bin_of_outcome[order] = merged
    bin_of_outcome[probs <= 0] = -1
    bin_mass = np.bincount(merged, weights=p_sorted)
    return bin_of_outcome, bin_mass


def binned_chisquare(
    sampled: list[torch.Tensor] | torch.Tensor,
    probs: torch.Tensor,
    key: torch.Tensor | None = None,
    n_bins: int = 20,
    min_expected: float = 5.0,
) -> dict:
    """Pooled chi-square of sampled outcome indices against exact probabilities.

    sampled: per group, a 1-D tensor of outcome indices (or a [G, n] tensor); probs: [G, K] exact probabilities
    (each row sums to 1); key: [G, K] sort key defining bin contiguity (default: the outcome index).
    Returns statistic, p-value, degrees of freedom, and the number of draws that hit zero-probability outcomes."""
    probs = probs.detach().double().cpu()
    if probs.dim() == 1:
        probs = probs[None]
        sampled = [sampled]
    key = torch.arange(probs.shape[-1]).expand_as(probs) if key is None else key.cpu()
    obs, exp = [], []
    impossible = 0
    for g in range(probs.shape[0]):
        idx = torch.as_tensor(sampled[g]).long().cpu().numpy()
        n = len(idx)
        p = probs[g].numpy()
        bins, mass = _group_bins(p, key[g].double().numpy(), n_bins, n, min_expected)
        b = bins[idx]
        impossible += int((b < 0).sum())
        counts = np.bincount(b[b >= 0], minlength=len(mass)).astype(np.float64)
        obs.append(counts)
        exp.append(mass / mass.sum() * counts.sum() if counts.sum() > 0 else mass * n)
    f_obs, f_exp = np.concatenate(obs), np.concatenate(exp)
    ddof = len(obs) - 1  # each group's counts sum to its own n: one constraint per group
    res = stats.chisquare(f_obs, f_exp, ddof=ddof)
    return {
        "statistic": float(res.statistic),
        "pvalue": float(res.pvalue),
        "df": len(f_obs) - 1 - ddof,
        "impossible": impossible,
        "bins": len(f_obs),
    }
