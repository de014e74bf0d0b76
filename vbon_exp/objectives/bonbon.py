"""`objective=bonbon`: BoNBoN alignment (Gui, Gârbacea & Veitch 2024) on (best, worst)-of-n pairs of reference
samples: minimise α·(−log π_θ(y_w|x)) + (1 − α)·(h(y_w) − h(y_l) − 1/(2β*_n))², β*_n = 1/(2(n − 1)·H_{n−1}),
h = log π_θ/π_ref. n = 1/β + 1, so one β axis covers BoN, vBoN, BoN-SFT and BoNBoN.

Exact target: not π_BoN. The population loss's minimiser over all distributions on a finite support is the fixed
point 2(1 − α)(L h − τ(p_w − p_l)) = α(p_w − π_h) of vbon_exp/preference_losses.py (L the Laplacian of the (best, worst)
pair law, p_w and p_l the laws of y_w and y_l, τ = 1/(2β*_n)); `target_log_probs` is that minimiser, and the
results line also carries exact_kl_to_bon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from vbon_exp.errors import ConfigError
from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.preference_pairs import PreferenceConfig, PreferenceObjective, _is_number
from vbon_exp.preference_losses import bonbon_beta_star, squared_loss_minimiser
from vbon_exp.trainers.preference_loop import PairLoss


@dataclass
class BoNBoNConfig(PreferenceConfig):
    """conf/objective/bonbon.yaml: N = 4 unless set (the samples per pair); β = 1/(N − 1) follows, or set β (a β
    sweep shared with vbon and kl_rl), then N = 1/β + 1 must be whole."""

    # Objective name (results column).
    name: str = "bonbon"
    # Samples per pair n (integer ≥ 2; default 4), or 1/β + 1 when objective.beta is set.
    n: Optional[Union[int, float]] = "${n_from_beta_if_set:4}"  # type: ignore[assignment]  (resolved to a number)
    # The equivalent KL coefficient β = 1/(n − 1) (follows n unless set; results column).
    beta: Optional[float] = "${beta_from_n:${.n}}"  # type: ignore[assignment]
    # Weight α ∈ [0, 1] of the SFT term −log π_θ(y_w|x) (Gui et al. 2024: 0.005).
    alpha: float = 0.005

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        if not _is_number(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"{prefix}.alpha must be in [0, 1] (the weight of BoNBoN's SFT term), got "
                              f"{self.alpha!r}")


@register_objective
class BoNBoNObjective(PreferenceObjective):
    name = "bonbon"
    label = "BoNBoN"
    config = BoNBoNConfig

    @property
    def beta_star(self) -> float:
        return bonbon_beta_star(self.cfg.pair_size)

    def pair_loss(self) -> PairLoss:
        return PairLoss("squared", beta=self.beta_star, tau=1.0 / (2.0 * self.beta_star),
                        alpha=float(self.cfg.alpha))

    def fit(self, ctx):
        policy = super().fit(ctx)
        ctx.extras.update(alpha=float(self.cfg.alpha), beta_star=self.beta_star)
        return policy

    def bon_target_n(self) -> float:
        """Gui et al.'s target π_BoN at the pairs' n (on a finite support the squared loss's exact minimiser
        differs slightly: target_log_probs)."""
        return float(self.cfg.pair_size)

    def target_log_probs(self, oracle):
        if self._target is None:
            self._target = squared_loss_minimiser(oracle.ref_log_probs, oracle.rewards, self.cfg.pair_size,
                                                  1.0 / (2.0 * self.beta_star), float(self.cfg.alpha))
        return self._target
