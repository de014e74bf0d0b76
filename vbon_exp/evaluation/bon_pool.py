"""Best-of-N for every N at once from a pool of cached π_ref rewards per test prompt (`objective=bon
objective.estimate=cache`, the default): no sampling. The pool is its own cache of `eval.bon_pool_m` samples per
prompt (name "bon_pool", disjoint from the test cache that the win rates and F̂ read); the estimators are
U-statistics over the pool's N-subsets and the tie-aware KL (vbon_exp/bootstrap.py `bon_pool_replicates`)."""

from __future__ import annotations

import time

from vbon_exp import bon
from vbon_exp.bootstrap import bon_pool_replicates, point_and_se, prompt_table_rows
from vbon_exp.errors import ConfigError
from vbon_exp.evaluation.policy import EvalContext, EvaluatedPolicy, PolicyPoint
from vbon_exp.evaluation.statistics import bootstrap_generator, covers

BON_POOL = "bon_pool"
# the KL estimates of BoN from the pool (kl_<name> columns); `auto` takes the tie-aware one
POOL_KL_ESTIMATORS = ("tie_aware", "k1")


class PoolPolicy(EvaluatedPolicy):
    """A policy estimated for several N from the BoN pool, one point per N: nothing is sampled (so nothing for the
    evaluation judges to score: the pool holds one reward per sample)."""

    samples = False

    def __init__(self, ns: list[int]):
        self.ns = [int(n) for n in ns]

    @classmethod
    def eval_caches(cls, settings) -> dict[str, int]:
        return {BON_POOL: settings.bon_pool_m}

    def at_temperature(self, temperature: float) -> PoolPolicy:
        return self  # the pool is read at each temperature from that temperature's cache


class PooledBoN(PoolPolicy):
    """Best-of-N for several N, estimated from the BoN pool."""

    def exact_log_probs(self, oracle, n: int):
        return oracle.bon_log_probs(n)

    def evaluate(self, ctx: EvalContext) -> list[PolicyPoint]:
        return [PolicyPoint(point) for point in evaluate_bon_pool(self, ctx)]


def evaluate_bon_pool(policy: PooledBoN, ctx: EvalContext) -> list[dict]:
    """One results dict per N of `policy.ns`: reward, win rates and KL estimates (`kl` is the tie-aware KL with
    `eval.kl_estimator=auto`, or k1), with SEs from the bootstrap over the pool and the test cache; on a task with an
    oracle, π_BoN's exact values, and where the evaluation temperature is the one the target is defined at
    (`with_target`) its distance to itself (0) and π_ref's."""
    t0 = time.perf_counter()
    settings = ctx.settings
    primary = "tie_aware" if settings.kl_estimator == "auto" else settings.kl_estimator
    if primary not in POOL_KL_ESTIMATORS:
        raise ConfigError(f"eval.kl_estimator={settings.kl_estimator} is not available for BoN from the pool (it "
                          f"offers {list(POOL_KL_ESTIMATORS)})")
    pool, test_cache = ctx.caches[BON_POOL], ctx.test_cache
    replicas = bon_pool_replicates(
        prompt_table_rows(pool.sorted_rewards, pool.lengths),
        prompt_table_rows(test_cache.sorted_rewards, test_cache.lengths), test_cache.first_rewards, policy.ns,
        settings.bootstrap, bootstrap_generator(ctx.seed))
    estimates = {name: point_and_se(values) for name, values in replicas.items()}
    tied = float(estimates.pop("tied_fraction")[0])
    points = []
    for j, n in enumerate(policy.ns):
        out = {"n": n, "beta": bon.beta_from_n(n) if n > 1 else None, "bon_pool_m": pool.m, "target_n": n,
               "eval_samples": float(pool.lengths.sum()), "bon_pool_tied_fraction": tied,
               "kl_analytic": bon.kl_bon_analytic(n), "kl_estimator": primary}
        for name, (point, se) in estimates.items():
            out[name], out[f"{name}_se"] = float(point[j]), float(se[j])
        out["kl"], out["kl_se"] = out[f"kl_{primary}"], out[f"kl_{primary}_se"]
        se_covers = {f"{name}_se": covers(name, settings.bootstrap, "BoN pool") for name in estimates}
        out["se_covers"] = {**se_covers, "kl_se": se_covers[f"kl_{primary}_se"]}
        if ctx.task.oracle is not None:
            out.update(exact_bon(ctx.task.oracle, policy.exact_log_probs(ctx.task.oracle, n), ctx.with_target))
        points.append(out)
    return [{**p, "eval_wall_s": time.perf_counter() - t0} for p in points]


def exact_bon(oracle, exact_log_probs, with_target: bool) -> dict[str, float]:
    """The oracle's exact metrics of π_BoN, and with `with_target` its own target (KL 0, as the sampled path's) and
    KL(π_ref ‖ π_BoN)."""
    if not with_target:
        return oracle.metrics(exact_log_probs)
    out = oracle.metrics(exact_log_probs, exact_log_probs)
    out["exact_kl_to_target_init"] = oracle.metrics(oracle.ref_log_probs, exact_log_probs)["exact_kl_to_target"]
    return out
