"""`objective=bon`: best-of-N sampling from π_ref at inference time; nothing is trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from vbon_exp.errors import ConfigError
from vbon_exp.objectives.base import Objective, ObjectiveConfig, RunContext, register_objective
from vbon_exp.policies import BoNPolicy, ModelPolicy


@dataclass
class NFirstConfig(ObjectiveConfig):
    """Objectives defined by N (bon, bon_sft): N = 4 unless set; β = 1/(N − 1) follows. Set β instead, as the β
    sweeps in conf/experiment/ do to share one grid with vbon and kl_rl: then N = 1/β + 1, which must be a whole
    number (β = 1/(N − 1): 1/3, 1/7, 1/15, ...). If both are set they must agree."""

    # Samples N (integer ≥ 1; default 4), or 1/β + 1 when objective.beta is set.
    n: Optional[Union[int, float]] = "${n_from_beta_if_set:4}"  # type: ignore[assignment]  (resolved to a number)
    # The equivalent KL coefficient β = 1/(N − 1) (follows N unless set; results column).
    beta: Optional[float] = "${beta_from_n:${.n}}"  # type: ignore[assignment]

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
class BoNConfig(NFirstConfig):
    """conf/objective/bon.yaml."""

    # Objective name (results column).
    name: str = "bon"


@register_objective
class BoNObjective(Objective):
    name = "bon"
    label = "BoN (sampling)"
    config = BoNConfig

    def fit(self, ctx: RunContext) -> BoNPolicy:
        reference = ModelPolicy(ctx.task.reference, ctx.task, ctx.sampling, ctx.cfg.eval.score_batch_size)
        return BoNPolicy(reference, int(self.n))

    def bon_target_n(self) -> float:
        return float(self.n)

    def target_log_probs(self, oracle):
        return oracle.bon_log_probs(int(self.n))
