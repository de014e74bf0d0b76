"""`objective=dpo`: Direct Preference Optimisation (Rafailov et al. 2023) on (best, worst)-of-n pairs of reference
samples: minimise −log σ(β·(h(y_w) − h(y_l))), h = log π_θ/π_ref.

Exact target: none. Every pair with r(y_w) > r(y_l) has positive probability, so the population loss only reaches
its infimum 0 as h(y_w) − h(y_l) → ∞ for all of them: π_θ → the point mass on each prompt's highest-reward
response, whatever β (Azar et al. 2023, §4.2). β and the training budget decide how far along that path a run
ends; `target_log_probs` is None (no exact_kl_to_target column); `exact_kl_to_bon` is reported beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from vbon_exp.errors import ConfigError, check_number
from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.preference_pairs import PreferenceConfig, PreferenceObjective, whole
from vbon_exp.trainers.preference_loop import PairLoss


@dataclass
class DPOConfig(PreferenceConfig):
    """conf/objective/dpo.yaml."""

    # Objective name (results column).
    name: str = "dpo"
    # KL coefficient β (> 0) of the loss. Set β; N follows it.
    beta: Optional[float] = 1 / 3
    # The BoN N with the same β (N = 1/β + 1; results column), and the default number of samples per pair.
    n: Optional[Union[int, float]] = "${n_from_beta:${.beta}}"  # type: ignore[assignment]  (resolved to a number)
    # Samples per pair (integer ≥ 2); null = N = 1/β + 1, which must then be a whole number (β = 1/3, 1/7, ...), so
    # a β sweep trains DPO on the same pairs as BoNBoN.
    pair_n: Optional[int] = None

    @property
    def pair_size(self) -> int:
        return self.pair_n if self.pair_n is not None else whole(self.n)

    def needs_whole_n(self) -> bool:
        return self.pair_n is None  # pairs of N = 1/β + 1 samples; with pair_n, β is DPO's own coefficient

    def _check_pair_size(self, prefix: str = "objective") -> None:
        if self.pair_n is not None:
            check_number(f"{prefix}.pair_n", self.pair_n, integer=True, minimum=2)
            return
        n = whole(self.n)
        if n is None or n < 2:
            raise ConfigError(
                f"{prefix}.pair_n is null, so objective={self.name} draws each pair from N = 1/β + 1 = {self.n!r} "
                f"samples ({prefix}.beta={self.beta!r}), which is not a whole number ≥ 2: set "
                f"{prefix}.pair_n=<integer ≥ 2>, or β = 1/(N − 1) (1/3, 1/7, ...)")


@register_objective
class DPOObjective(PreferenceObjective):
    name = "dpo"
    label = "DPO"
    config = DPOConfig

    def pair_loss(self) -> PairLoss:
        return PairLoss("dpo", beta=float(self.cfg.beta))

    def target_log_probs(self, oracle):
        return None  # no finite minimiser (module docstring)
