"""`objective=bon`: best-of-N sampling from π_ref at inference time; nothing is trained.

Two estimates of BoN's point (`objective.estimate`): `cache` (default) reads a pool of M_eval cached π_ref samples per
test prompt (`eval.bon_pool_m`, its own cache) and gives every N ≤ M_eval at once, unbiased U-statistics for reward
and win rate and the tie-aware KL (vbon_exp/evaluation/bon_pool.py), with no sampling; `objective.n=all` writes
one results line per N = 1, 2, 4, … ≤ M_eval/4. `sample` draws N·eval.samples_per_prompt fresh π_ref samples per
prompt and keeps the best of each N (vbon_exp.evaluation.BoNPolicy): a check of the cache estimate, one N per run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from vbon_exp.errors import ConfigError, check_choice
from vbon_exp.evaluation import BoNPolicy, PooledBoN
from vbon_exp.objectives.base import Objective, ObjectiveConfig, RunContext, model_policy, register_objective
from vbon_exp.pool_estimators import bon_pool_ns


@dataclass
class NFirstConfig(ObjectiveConfig):
    """Objectives defined by N (bon, bon_sft): N = 4 unless set; β = 1/(N − 1) follows. Set β instead, as the β
    sweeps in conf/experiment/ do to share one grid with vbon and kl_rl: then N = 1/β + 1, which must be a whole
    number (β = 1/(N − 1): 1/3, 1/7, 1/15, ...). If both are set they must agree."""

    # Samples N (integer ≥ 1; default 4), or 1/β + 1 when objective.beta is set.
    n: Optional[Union[int, float]] = "${n_from_beta_if_set:4}"  # type: ignore[assignment]  (resolved to a number)
    # The equivalent KL coefficient β = 1/(N − 1) (follows N unless set; results column).
    beta: Optional[float] = "${beta_from_n:${.n}}"  # type: ignore[assignment]

    def needs_whole_n(self) -> bool:
        return True

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        if self.n is None:
            raise ConfigError(f"{prefix}.n must be set for objective={self.name} (an integer ≥ 1)")
        if int(self.n) != self.n:
            hint = ""
            if self.beta is not None and abs(self.n - (1.0 / self.beta + 1.0)) <= 1e-9 * self.n:
                hint = (f" (N = 1/β + 1 from {prefix}.beta={self.beta!r}; choose β = 1/(N − 1) for a whole N, "
                        "e.g. 1/3, 1/7, 1/15)")
            raise ConfigError(f"{prefix}.n must be an integer for objective={self.name}, got {self.n!r}{hint}")
        check_n_beta_agree(self, prefix, primary=f"{prefix}.n or {prefix}.beta")


def check_n_beta_agree(cfg: ObjectiveConfig, prefix: str, primary: str) -> None:
    """N = 1/β + 1 whenever both are set."""
    import math

    if cfg.n is not None and cfg.beta is not None and not math.isclose(cfg.n, 1.0 / cfg.beta + 1.0, rel_tol=1e-6):
        raise ConfigError(f"{prefix}.n={cfg.n} and {prefix}.beta={cfg.beta} disagree (N = 1/β + 1); for "
                          f"objective={cfg.name} set {primary} only, the other follows it")


@dataclass
class PoolNConfig(NFirstConfig):
    """Objectives estimated from the BoN pool for every N at once (bon with estimate=cache, and BoN's pooled
    relatives): N, or `all`."""

    # Samples N (integer ≥ 1; default 4), or 1/β + 1 when objective.beta is set, or `all` (from the BoN pool):
    # N = 1, 2, 4, … ≤ eval.bon_pool_m/4, one results line each, β = 1/(N − 1) per line (null for N = 1).
    n: int | float | str | None = "${n_from_beta_if_set:4}"  # type: ignore[assignment]

    def needs_whole_n(self) -> bool:
        return self.n != "all"

    def check(self, prefix: str = "objective") -> None:
        if self.n == "all":
            return
        if isinstance(self.n, str):
            raise ConfigError(f"{prefix}.n must be a whole number ≥ 1 or 'all', got {self.n!r}")
        super().check(prefix)

    def check_pool(self, cfg, what: str = "") -> None:
        """N cannot exceed the pool it is estimated from. (Judges score samples and the pool holds rewards only: a
        pooled point has no judge columns — run.evaluate_run says so — so a sweep's eval.judges apply to the rest.)"""
        pool = cfg.eval.bon_pool_m
        if self.n != "all" and self.n is not None and self.n > pool:
            raise ConfigError(f"objective.n={self.n} exceeds eval.bon_pool_m={pool}, the pool objective={self.name} is "
                              f"estimated from: raise eval.bon_pool_m{what}")

    def ns(self, pool_m: int) -> list[int]:
        """The N of each results line."""
        return bon_pool_ns(pool_m) if self.n == "all" else [int(self.n)]


@dataclass
class BoNConfig(PoolNConfig):
    """conf/objective/bon.yaml."""

    # Objective name (results column).
    name: str = "bon"
    # How BoN's point is estimated (results column `estimate`): cache = from a pool of eval.bon_pool_m cached π_ref
    # samples per test prompt, every N at once, no sampling | sample = fresh BoN samples (eval.samples_per_prompt per
    # prompt, N π_ref draws each): the check.
    estimate: str = "cache"

    def check(self, prefix: str = "objective") -> None:
        check_choice(f"{prefix}.estimate", self.estimate, ("cache", "sample"))
        if self.n == "all" and self.estimate != "cache":
            raise ConfigError(f"{prefix}.n=all needs {prefix}.estimate=cache (one pool gives every N); "
                              f"{prefix}.estimate={self.estimate} samples one N per run")
        super().check(prefix)

    def check_run(self, cfg) -> None:
        if self.estimate == "cache":
            self.check_pool(cfg, " (or set objective.estimate=sample)")


@register_objective
class BoNObjective(Objective):
    name = "bon"
    label = "BoN (sampling)"
    config = BoNConfig

    def evaluation_caches(self, eval_settings) -> dict[str, int]:
        return PooledBoN.eval_caches(eval_settings) if self.cfg.estimate == "cache" else {}

    def fit(self, ctx: RunContext) -> BoNPolicy | PooledBoN:
        ctx.extras["estimate"] = self.cfg.estimate
        if self.cfg.estimate == "cache":
            return PooledBoN(self.cfg.ns(ctx.cfg.eval.bon_pool_m))
        # fresh draws are a check on the pool, and the way to BoN's judge columns: a method of their own in tables
        ctx.extras["variant"] = "drawn"
        reference = model_policy(ctx, ctx.task.reference)
        return BoNPolicy(reference, int(self.n))

    def bon_target_n(self) -> float | None:
        """N; with n=all each line's own N (run.evaluate_pool_points), so none for the run."""
        return None if self.n == "all" else float(self.n)

    def target_log_probs(self, oracle):
        if self.n == "all":
            raise ValueError("objective.n=all has one target per N: PooledBoN.exact_log_probs(oracle, n)")
        return oracle.bon_log_probs(int(self.n))
