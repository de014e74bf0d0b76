"""BoN's relatives that keep one of N π_ref samples by their rewards alone (soft BoN, rejection BoN, ...), estimated
for every N at once from the BoN pool, as BoN itself is (vbon_exp/evaluation/bon_pool.py): nothing is sampled.

- `reward`, `win_rate`, `win_rate_first`: U-statistics over the pool's N-subsets, Σ_k w_k·h(r_(k)) with w_k the
  probability that the pool's k-th lowest sample is the one kept from a random N-subset (`weights`; exact, or the
  average over random subsets: an incomplete U-statistic). The pool and the test cache are disjoint, so these are
  unbiased for the rule's reward and win rate against one π_ref sample.
- `kl` (`kl_plugin`, `kl_estimator: plugin`): the rule's KL(π_rule ‖ π_ref) with π_ref replaced by the pool's
  empirical distribution — a plug-in, consistent but biased by O(1/M): no unbiased estimator of a KL exists here.
SEs: the bootstrap over each prompt's pool and test cache jointly (`eval.bootstrap`), as for BoN."""

from __future__ import annotations

import time

import torch

from vbon_exp import bon
from vbon_exp.bootstrap import point_and_se, prompt_table_rows, rule_pool_replicates
from vbon_exp.evaluation.bon_pool import BON_POOL, PoolPolicy
from vbon_exp.evaluation.policy import EvalContext, PolicyPoint
from vbon_exp.evaluation.statistics import bootstrap_generator, covers


class PooledRule(PoolPolicy):
    """A reward-only selection rule over N π_ref samples, evaluated from the BoN pool (module docstring).
    Subclasses give `weights`, `plugin_kl`, `exact_log_probs` and, where they have settings, `columns`."""

    # whether the plug-in KL is recomputed on every bootstrap replicate (its SE); False where it is costly
    kl_replicates: bool = True

    def prepare(self, ctx: EvalContext) -> None:
        """Per-evaluation set-up from the caches at this temperature (e.g. per-prompt thresholds); none by default."""

    def weights(self, values: torch.Tensor, n: int, prompt: int) -> torch.Tensor:
        """[R, M]: the probability that each sample of a sorted pool row is the one kept from a random N-subset."""
        raise NotImplementedError

    def plugin_kl(self, level_values: torch.Tensor, mass: torch.Tensor, atomic: torch.Tensor, n: int,
                  prompt: int) -> torch.Tensor:
        """[R]: KL(π_rule ‖ π_ref) on the pool's reward levels (values [L], π_ref masses [R, L], tied levels)."""
        raise NotImplementedError

    def exact_log_probs(self, oracle, n: int) -> torch.Tensor:
        raise NotImplementedError

    def columns(self) -> dict:
        """The rule's settings, as results columns."""
        return {}

    def evaluate(self, ctx: EvalContext) -> list[PolicyPoint]:
        t0 = time.perf_counter()
        self.prepare(ctx)
        pool, test_cache, replicates = ctx.caches[BON_POOL], ctx.test_cache, ctx.settings.bootstrap
        estimates = {name: point_and_se(values) for name, values in rule_pool_replicates(
            prompt_table_rows(pool.sorted_rewards, pool.lengths),
            prompt_table_rows(test_cache.sorted_rewards, test_cache.lengths), test_cache.first_rewards, self.ns,
            replicates, bootstrap_generator(ctx.seed), self).items()}
        points = []
        for j, n in enumerate(self.ns):
            out = {"n": n, "beta": bon.beta_from_n(n) if n > 1 else None, "bon_pool_m": pool.m,
                   "eval_samples": float(pool.lengths.sum()), "kl_estimator": "plugin", **self.columns()}
            for name, (point, se) in estimates.items():
                out[name], out[f"{name}_se"] = float(point[j]), float(se[j])
            out["kl"], out["kl_se"] = out["kl_plugin"], out["kl_plugin_se"]
            se_covers = {f"{name}_se": covers(name, replicates, "BoN pool") for name in estimates}
            if not self.kl_replicates:
                se_covers["kl_plugin_se"] = "not estimated (a plug-in on the pool, not bootstrapped: costly)"
            out["se_covers"] = {**se_covers, "kl_se": se_covers["kl_plugin_se"]}
            if ctx.task.oracle is not None:
                out.update(ctx.task.oracle.metrics(self.exact_log_probs(ctx.task.oracle, n)))
            points.append(out)
        return [PolicyPoint({**p, "eval_wall_s": time.perf_counter() - t0}) for p in points]
