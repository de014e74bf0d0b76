"""Seeded bootstrap replicates for the standard errors into which cached reference samples enter.

An estimate that compares policy samples with a prompt's cached π_ref rewards (a win rate, BoN's k1 KL through F̂)
or that is computed from cached rewards alone (BoN from a pool) carries the noise of the cache as well as that of the
policy samples. The bootstrap (Efron & Tibshirani 1993, ch. 6) resamples, for every prompt independently, its policy
samples and its cached rewards with replacement, jointly, and recomputes the estimate: the SD of the replicates is
the standard error, both sources included. Prompts are the fixed evaluation set, so each is resampled within itself
(the stratified bootstrap), like `policies.stratified_mean_se`.

Every resampling here is a [1 + B, size] table of indices whose row 0 is the identity (the data themselves), so one
code path gives the estimate (row 0) and its B replicates (rows 1..B). Rows are sorted: indexing a sorted array with
them keeps it sorted, and a cache's resampled counts below any value are one searchsorted away."""

from __future__ import annotations

import math

import torch

from vbon_exp import bon, pool_estimators


def resample_indices(size: int, replicates: int, generator: torch.Generator) -> torch.Tensor:
    """[1 + replicates, size] sorted indices into `size` items: row 0 the identity, then draws with replacement."""
    identity = torch.arange(size)[None]
    if replicates == 0:
        return identity
    draws = torch.randint(0, size, (replicates, size), generator=generator).sort(dim=-1).values
    return torch.cat([identity, draws])


class ResampledCache:
    """One prompt's cached rewards (sorted, T of them) under R resamplings (`resample_indices`; row 0 the cache).

    Only counts matter to the estimates that read a cache: C[r, j] = how many of resampling r's draws have original
    sorted position < j, so that #{resampled cached rewards < x} = C[r, searchsorted_left(x)] (and ≤ with the right
    side)."""

    def __init__(self, sorted_rewards: torch.Tensor, indices: torch.Tensor):
        self.sorted_rewards = sorted_rewards.to(torch.float64).contiguous()
        self.size = int(sorted_rewards.shape[0])
        positions = torch.arange(self.size + 1).expand(indices.shape[0], -1).contiguous()
        self.cumulative = torch.searchsorted(indices.contiguous(), positions, side="left").to(torch.float64)

    def counts(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(#{cached < v}, #{cached ≤ v}) in each resampling for `values` [R, K] (row r read against resampling r)."""
        values = values.to(torch.float64).contiguous()
        below = torch.searchsorted(self.sorted_rewards, values, side="left")
        at_or_below = torch.searchsorted(self.sorted_rewards, values, side="right")
        return self.cumulative.gather(1, below), self.cumulative.gather(1, at_or_below)

    def win_prob(self, values: torch.Tensor) -> torch.Tensor:
        """P(v beats a cached reward), ties ½ (bon.win_prob), in each resampling: [R, K]."""
        less, less_equal = self.counts(values)
        return bon.win_prob_from_counts(less, less_equal, self.size)

    def log_cdf_hat(self, values: torch.Tensor) -> torch.Tensor:
        """log F̂(v) = log((#{cached < v} + 1)/(T + 1)) (bon.log_cdf_hat) in each resampling: [R, K]."""
        less, _ = self.counts(values)
        return bon.log_cdf_hat_from_counts(less, self.size)

    def log_bon_ratio(self, values: torch.Tensor, n: int) -> torch.Tensor:
        """BoN's per-sample estimate of log π_BoN/π_ref at v, tie-aware (pool_estimators.log_bon_ratio_from_counts),
        in each resampling: [R, K]."""
        less, less_equal = self.counts(values)
        return pool_estimators.log_bon_ratio_from_counts(less, less_equal, self.size, n)

    def redraw_one(self, replicates: int, generator: torch.Generator, first: float) -> torch.Tensor:
        """[1 + replicates] single reference rewards: `first` (the cache's first draw), then draws from the cache, for
        estimates against one reference sample per prompt (win_rate_first): what another first draw could have been."""
        draws = self.sorted_rewards[torch.randint(0, self.size, (replicates,), generator=generator)]
        return torch.cat([torch.tensor([float(first)], dtype=torch.float64), draws])


def point_and_se(replicates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row 0, SD of rows 1..B) along dim 0; the SE is NaN without replicates."""
    if replicates.shape[0] < 3:
        return replicates[0], torch.full_like(replicates[0], math.nan)
    return replicates[0], replicates[1:].std(dim=0, unbiased=True)


def prompt_table_rows(sorted_table: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """The finite sorted rewards of each prompt of a padded cache table (reference.ReferenceCache)."""
    return [sorted_table[p, : int(lengths[p])] for p in range(sorted_table.shape[0])]


def policy_replicates(rewards: torch.Tensor, prompt_index: torch.Tensor, cache_rows: list[torch.Tensor],
                      first_rewards: torch.Tensor | None, replicates: int, generator: torch.Generator,
                      bon_n: int | None = None) -> dict[str, torch.Tensor]:
    """[1 + B] replicates of the prompt-mean estimates that compare policy samples with the reference cache: row 0
    the estimate, then the policy samples and the cache of each prompt resampled jointly.

    `win_rate` (ties ½, against every cached reward), `win_rate_first` (against the cache's first draw, ties lose;
    with `first_rewards`: that one reference draw is redrawn from the cache in each replicate) and, for BoN with
    `bon_n`, `kl_k1`: the mean of the per-sample estimate of log π_BoN/π_ref from the cache's counts, tie-aware
    (`ResampledCache.log_bon_ratio`). `cache_rows[p]`: prompt p's sorted rewards.
    The first draws are redrawn after every prompt's resampling, so the resamplings do not depend on whether there
    are first draws: the same generator seed gives the same `win_rate` replicates for the same data."""
    rewards, prompt_index = rewards.cpu().to(torch.float64), prompt_index.cpu()
    out: dict[str, list[torch.Tensor]] = {"win_rate": [], "win_rate_first": [], "kl_k1": []}
    resampled = []
    for p in torch.unique(prompt_index).tolist():
        r = rewards[prompt_index == p]
        values = r[resample_indices(len(r), replicates, generator)]  # [R, n]
        cache = ResampledCache(cache_rows[p], resample_indices(len(cache_rows[p]), replicates, generator))
        out["win_rate"].append(cache.win_prob(values).mean(-1))
        if bon_n is not None:
            out["kl_k1"].append(cache.log_bon_ratio(values, bon_n).mean(-1))
        resampled.append((p, values, cache))
    for p, values, cache in resampled if first_rewards is not None else ():
        reference = cache.redraw_one(replicates, generator, float(first_rewards[p]))
        out["win_rate_first"].append((values > reference[:, None]).to(torch.float64).mean(-1))
    return {name: torch.stack(rows).mean(0) for name, rows in out.items() if rows}


def bon_pool_replicates(pool_rows: list[torch.Tensor], cache_rows: list[torch.Tensor],
                        first_rewards: torch.Tensor | None, ns: list[int], replicates: int,
                        generator: torch.Generator) -> dict[str, torch.Tensor]:
    """[1 + B, len(ns)] replicates of best-of-N estimated from a pool of π_ref rewards per prompt, for every N at once
    (pool_estimators.bon_order_weights): row 0 the estimates, then each prompt's pool and reference cache resampled jointly.

    - `reward`: E[r(best of N)], the U-statistic Σ_k r_(k)·C(k−1, N−1)/C(M, N);
    - `win_rate`: the same U-statistic of P(r_(k) beats a reference cache sample), ties ½: the pool and the cache are
      disjoint, so it is unbiased for BoN's win rate against one π_ref sample;
    - `win_rate_first`: of 1[r_(k) > the cache's first draw] (ties lose; the first draw redrawn per replicate);
    - `kl_k1`: the U-statistic of the per-sample estimate of log π_BoN/π_ref from the reference cache's counts
      (`ResampledCache.log_bon_ratio`, tie-aware: the sampled path's k1 estimate);
    - `kl_tie_aware`: pool_estimators.kl_bon_levels on the pool's reward levels, a level tied in the pool (≥ 2 samples) taken as
      an atom of mass count/M, untied samples as continuous (then log N − (N−1)/N exactly); replicates keep the
      pool's atoms and resample their masses;
    - `tied_fraction` [1 + B]: the fraction of pool samples that tie with another (row 0 is the pool's)."""
    ns = [int(n) for n in ns]
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("reward", "win_rate", "win_rate_first", "kl_k1",
                                                           "kl_tie_aware", "tied_fraction")}
    weights: dict[int, torch.Tensor] = {}
    for p, pool in enumerate(pool_rows):
        m = len(pool)
        w = weights.setdefault(m, pool_estimators.bon_order_weights(m, ns))
        indices = resample_indices(m, replicates, generator)
        values = pool.to(torch.float64)[indices]  # [R, M], each row sorted
        cache = ResampledCache(cache_rows[p], resample_indices(len(cache_rows[p]), replicates, generator))
        out["reward"].append(pool_estimators.bon_pool_mean(values, w))
        out["win_rate"].append(pool_estimators.bon_pool_mean(cache.win_prob(values), w))
        out["kl_k1"].append(torch.stack([(cache.log_bon_ratio(values, n) * w[j]).sum(-1) for j, n in enumerate(ns)],
                                        dim=-1))
        if first_rewards is not None:
            reference = cache.redraw_one(replicates, generator, float(first_rewards[p]))
            out["win_rate_first"].append(pool_estimators.bon_pool_mean((values > reference[:, None]).to(torch.float64), w))
        level, counts = pool_estimators.pool_levels(pool)
        atomic = counts >= 2
        mass = torch.zeros(values.shape[0], len(counts), dtype=torch.float64)
        mass.scatter_add_(1, level[indices], torch.full(indices.shape, 1.0 / m, dtype=torch.float64))
        out["kl_tie_aware"].append(torch.stack([pool_estimators.kl_bon_levels(mass, atomic, n) for n in ns], dim=-1))
        out["tied_fraction"].append(mass[:, atomic].sum(-1))
    return {name: torch.stack(rows).mean(0) for name, rows in out.items() if rows}


def rule_pool_replicates(pool_rows: list[torch.Tensor], cache_rows: list[torch.Tensor],
                         first_rewards: torch.Tensor | None, ns: list[int], replicates: int,
                         generator: torch.Generator, rule) -> dict[str, torch.Tensor]:
    """[1 + B, len(ns)] replicates of a rule that keeps one of N π_ref samples by their rewards (BoN's relatives),
    estimated from a pool of π_ref rewards per prompt for every N at once: row 0 the estimates, then each prompt's
    pool and reference cache resampled jointly (as `bon_pool_replicates`).

    `rule.weights(values [R, M] sorted, n, prompt)` → [R, M]: the probability that each pool sample is the one the
    rule keeps from a random N-subset of the pool, so that Σ_k w_k·h(r_(k)) is the U-statistic of h of the kept
    sample: `reward`, `win_rate` (against the reference cache, ties ½), `win_rate_first` (against its first draw).
    `rule.plugin_kl(level_values [L], mass [R', L], atomic [L], n, prompt)` → [R']: the rule's KL on the pool's
    empirical distribution (levels as in `bon_pool_replicates`: a tied level an atom, an untied sample a continuum);
    R' = 1 + B where `rule.kl_replicates`, else 1 (the estimate alone: its SE is not estimated, NaN)."""
    ns = [int(n) for n in ns]
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("reward", "win_rate", "win_rate_first", "kl_plugin")}
    for p, pool in enumerate(pool_rows):
        m = len(pool)
        indices = resample_indices(m, replicates, generator)
        values = pool.to(torch.float64)[indices]  # [R, M], each row sorted
        cache = ResampledCache(cache_rows[p], resample_indices(len(cache_rows[p]), replicates, generator))
        win = cache.win_prob(values)
        first = None
        if first_rewards is not None:
            reference = cache.redraw_one(replicates, generator, float(first_rewards[p]))
            first = (values > reference[:, None]).to(torch.float64)
        weights = [rule.weights(values, n, p) for n in ns]  # each [R, M]
        out["reward"].append(torch.stack([(values * w).sum(-1) for w in weights], dim=-1))
        out["win_rate"].append(torch.stack([(win * w).sum(-1) for w in weights], dim=-1))
        if first is not None:
            out["win_rate_first"].append(torch.stack([(first * w).sum(-1) for w in weights], dim=-1))
        level, counts = pool_estimators.pool_levels(pool)
        mass = torch.zeros(values.shape[0], len(counts), dtype=torch.float64)
        mass.scatter_add_(1, level[indices], torch.full(indices.shape, 1.0 / m, dtype=torch.float64))
        kl_rows = mass if rule.kl_replicates else mass[:1]
        level_values = pool.to(torch.float64)[torch.cumsum(counts, 0) - 1]
        kl = torch.stack([rule.plugin_kl(level_values, kl_rows, counts >= 2, n, p) for n in ns], dim=-1)
        if not rule.kl_replicates:  # no replicates: NaN rows, so point_and_se gives no SE
            kl = torch.cat([kl, torch.full((values.shape[0] - 1, len(ns)), math.nan, dtype=torch.float64)])
        out["kl_plugin"].append(kl)
    return {name: torch.stack(rows).mean(0) for name, rows in out.items() if rows}
