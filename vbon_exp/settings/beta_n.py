"""The (β, N) axis every objective sits on: N = 1/β + 1 (§3 of the paper), its numbers, its resolvers, and the
config bases of the objectives defined by N (BoN and its relatives, BoN-SFT, BOND) or by β (vBoN, KL-RL).

Each objective's YAML sets one of β and N and derives the other through `${beta_from_n:${.n}}`,
`${n_from_beta:${.beta}}` or `${n_from_beta_if_set:4}` (registered here, on import)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from omegaconf import OmegaConf

from vbon_exp.errors import ConfigError, check_number

# The name of the BoN pool's evaluation cache (its own cache key part purpose=bon_pool).
BON_POOL = "bon_pool"


def n_from_beta(beta: float) -> float:
    """N = 1/β + 1: the BoN sample count whose distribution is the optimum of RL with KL coefficient β (§3)."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return 1.0 / beta + 1.0


def beta_from_n(n: float) -> float:
    """β = 1/(N−1); N = 1 (no selection) has no finite β."""
    if n <= 1:
        raise ValueError(f"beta_from_n needs N > 1, got {n}")
    return 1.0 / (n - 1.0)


# A β within this relative distance of 1/(N − 1) means that whole N (`whole_n`): the β a user types or a sweep
# lists (0.1428571, 0.142857) stands for N = 8; 1e-4 is far below the gap between neighbouring N (1/(N − 1) and
# 1/N differ by a relative 1/N ≥ 0.5% up to N = 200) and far above a float's rounding.
WHOLE_N_RTOL = 1e-4


def whole_n(beta: float) -> int | None:
    """The whole N ≥ 2 whose β = 1/(N − 1) is within a relative WHOLE_N_RTOL of `beta`, else None: the one rule by
    which every objective that needs a whole N (BoN, BoN-SFT, BOND, DPO's pairs, ...) reads a β."""
    if not is_number(beta) or beta <= 0:
        return None
    n = round(1.0 / beta + 1.0)
    return n if n >= 2 and abs(beta * (n - 1) - 1.0) <= WHOLE_N_RTOL else None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(value) -> int | None:
    """The integer a float such as 1/(1/15) + 1 = 15.999… stands for (within 1e-9), else None."""
    if not is_number(value) or abs(value - round(value)) > 1e-9 * max(1.0, abs(value)):
        return None
    return int(round(value))


def bon_pool_ns(m: int) -> list[int]:
    """`objective.n=all`: N = 1, 2, 4, … up to M/4, the powers of two a pool of M estimates well (a U-statistic of
    the best of N averages over the top ≈ M/N samples of the pool)."""
    return [2**i for i in range(int(math.log2(max(m // 4, 1))) + 1)]


# --------------------------------------------------------------------------- N <-> β resolvers


def _or_none(fn, value):
    try:
        return fn(float(value))
    except (TypeError, ValueError):
        return None


def _n_from_beta_if_set(default, *, _parent_):
    """`${n_from_beta_if_set:4}` (bon, bon_sft): N = 1/β + 1 when the objective's `beta` was set to a value (a β
    sweep shared with vbon and kl_rl), else `default`. `beta` itself is `${beta_from_n:${.n}}`: whichever of the
    two the user sets, the other follows, with no cycle (this looks at `beta` only when it is not derived)."""
    if "beta" not in _parent_ or OmegaConf.is_interpolation(_parent_, "beta"):
        return default
    n = _or_none(n_from_beta, _parent_.beta)
    return whole(n) if whole(n) is not None else n  # 1/(1/15) + 1 = 15.999… is 15 + 1


def register_resolvers() -> None:
    """`${n_from_beta:${.beta}}` and `${beta_from_n:${.n}}` tie N and β together in objective configs: each
    objective sets one and derives the other; `${n_from_beta_if_set:4}` lets bon and bon_sft take either (N by
    default, β in sweeps). An invalid value gives null, which the objective's check names."""
    resolvers = (("n_from_beta", lambda beta: _or_none(n_from_beta, beta)),
                 ("beta_from_n", lambda n: _or_none(beta_from_n, n)),
                 ("n_from_beta_if_set", _n_from_beta_if_set))
    for name, fn in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


# --------------------------------------------------------------------------- the config bases


@dataclass
class ObjectiveConfig:
    """What every objective node has: its name and the (β, N) pair that places it on the shared β axis (N = 1/β + 1).
    Each objective's YAML sets one of the two and derives the other (conf/objective/*.yaml)."""

    # The method's declarations, read by validation, the run, the analysis and the plan (never a name list): its
    # legend label (results column objective_label; `legend()`: a run's own) and the trainer node it reads: algo
    # (the RL trainers; `algo` is then a results column) | sft | preference | None (nothing trained).
    method_label: ClassVar[str] = "?"
    trains_with: ClassVar[Optional[str]] = None  # (see above)
    # Extra float32 copies of the policy it trains beside it (iterative BOND's moving anchor): the plan counts them.
    policy_copies: ClassVar[int] = 0

    # Objective name (results column; vbon_exp.objectives.OBJECTIVES).
    name: str = "?"
    # KL coefficient β (> 0), or derived from N.
    beta: Optional[float] = None
    # The BoN sample count N = 1/β + 1, or derived from β.
    n: Optional[Union[int, float]] = None

    def check(self, prefix: str = "objective") -> None:
        check_number(f"{prefix}.beta", self.beta, exclusive_min=0, allow_none=True)
        check_number(f"{prefix}.n", self.n, minimum=1, allow_none=True)

    def legend(self) -> str:
        """The legend label of this run's points (results column `objective_label`): the method's by default."""
        return self.method_label

    def variant(self) -> Optional[str]:
        """What makes this run a method of its own beyond its name, β and N (soft BoN's λ, KL-RL's Φ, ...): results
        column `variant`; the analysis keeps each variant apart (`<name>[<variant>]`). None: the plain method."""
        return None

    def cache_splits(self) -> tuple[str, ...]:
        """The reference reward caches its training reads ("train": the train prompts' F̂); none by default."""
        return ()

    def evaluation_caches(self, eval_settings) -> dict[str, int]:
        """The extra evaluation caches of the test prompts its policy reads, name -> M, built with the test cache
        and counted by the memory pre-flight and the plan: by default π_ref's BoN pool where `eval.inference_n` puts
        the (sampled) policy under inference-time best-of-N′ (vbon_exp/evaluation/inference_bon.py), else none."""
        return eval_settings.inference_caches()

    def check_run(self, settings) -> None:
        """Rules that tie the objective to the rest of the run (`settings`: the RunSettings); none by default."""

    def needs_whole_n(self) -> bool:
        """Whether this objective reads N as a whole number (BoN's sample count, a pair's size, the exact bound's
        binomial sum): then a β within a relative 1e-4 of 1/(N − 1) is taken as that N (vbon_exp.bon.whole_n,
        applied by vbon_exp.config.validate)."""
        return False


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

    def evaluation_caches(self, eval_settings) -> dict[str, int]:
        return {BON_POOL: eval_settings.bon_pool_m}  # every N from one pool of π_ref samples per test prompt

    def check_run(self, settings) -> None:
        self.check_pool(settings)

    def check_pool(self, settings, what: str = "") -> None:
        """N cannot exceed the pool it is estimated from. (Judges score samples and the pool holds rewards only: a
        pooled point has no judge columns — run.evaluate_run says so — so a sweep's eval.judges apply to the rest.)"""
        pool = settings.eval.bon_pool_m
        if self.n != "all" and self.n is not None and self.n > pool:
            raise ConfigError(f"objective.n={self.n} exceeds eval.bon_pool_m={pool}, the pool objective={self.name} is "
                              f"estimated from: raise eval.bon_pool_m{what}")

    def ns(self, pool_m: int) -> list[int]:
        """The N of each results line."""
        return bon_pool_ns(pool_m) if self.n == "all" else [int(self.n)]


@dataclass
class BetaFirstConfig(ObjectiveConfig):
    """Objectives defined by β (vbon, kl_rl): set β; N = 1/β + 1 follows (a results column, for comparing with BoN)."""

    # KL coefficient β (> 0). Set β; N follows it.
    beta: Optional[float] = 0.3333333333333333
    # The BoN sample count N = 1/β + 1 (derived; results column).
    n: Optional[Union[int, float]] = "${n_from_beta:${.beta}}"  # type: ignore[assignment]  (resolved to a number)

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        if self.beta is None:
            raise ConfigError(f"{prefix}.beta must be set (> 0) for objective={self.name}")
        check_n_beta_agree(self, prefix, primary=f"{prefix}.beta")


def check_n_beta_agree(cfg: ObjectiveConfig, prefix: str, primary: str) -> None:
    """N = 1/β + 1 whenever both are set."""
    if cfg.n is not None and cfg.beta is not None and not math.isclose(cfg.n, 1.0 / cfg.beta + 1.0, rel_tol=1e-6):
        raise ConfigError(f"{prefix}.n={cfg.n} and {prefix}.beta={cfg.beta} disagree (N = 1/β + 1); for "
                          f"objective={cfg.name} set {primary} only, the other follows it")
