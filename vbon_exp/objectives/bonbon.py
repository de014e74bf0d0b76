"""`objective=bonbon`: BoNBoN alignment (Gui, Gârbacea & Veitch 2024) on (best, worst)-of-n pairs of reference
samples: minimise α·(−log π_θ(y_w|x)) + (1 − α)·(h(y_w) − h(y_l) − 1/(2β*_n))², β*_n = 1/(2(n − 1)·H_{n−1}),
h = log π_θ/π_ref. n = 1/β + 1, so one β axis covers BoN, vBoN, BoN-SFT and BoNBoN.

Exact target: not π_BoN. The population loss's minimiser over all distributions on a finite support is the fixed
point 2(1 − α)(L h − τ(p_w − p_l)) = α(p_w − π_h) of vbon_exp/preference_losses.py (L the Laplacian of the (best, worst)
pair law, p_w and p_l the laws of y_w and y_l, τ = 1/(2β*_n)); `target_log_probs` is that minimiser, and the
results line also carries exact_kl_to_bon."""

from __future__ import annotations


from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.preference_pairs import PreferenceObjective
from vbon_exp.preference_losses import bonbon_beta_star, squared_loss_minimiser
from vbon_exp.trainers.preference_loop import PairLoss
from vbon_exp.settings.objective_pairs import BoNBoNConfig


@register_objective
class BoNBoNObjective(PreferenceObjective):
    name = "bonbon"
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
