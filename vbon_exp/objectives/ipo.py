"""`objective=ipo`: Identity Preference Optimisation (Azar et al. 2023, eq. 17) on (best, worst)-of-n pairs of
reference samples: minimise (h(y_w) − h(y_l) − 1/(2β))², h = log π_θ/π_ref summed over response tokens (BoNBoN's
squared loss with α = 0 and its own margin; TRL averages h over tokens instead, see tests/test_preference_losses.py).

Exact target: the population loss is the quadratic form hᵀLh − 2τ·hᵀ(p_w − p_l) + τ² (L the Laplacian of the
pair law), minimised by L h = τ(p_w − p_l), τ = 1/(2β) (vbon_exp/preference_losses.py); π* = π_ref·e^h / Z."""

from __future__ import annotations


from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.preference_pairs import PreferenceObjective
from vbon_exp.preference_losses import squared_loss_minimiser
from vbon_exp.trainers.preference_loop import PairLoss
from vbon_exp.settings.objective_pairs import IPOConfig


@register_objective
class IPOObjective(PreferenceObjective):
    name = "ipo"
    config = IPOConfig

    @property
    def tau(self) -> float:
        return 1.0 / (2.0 * float(self.cfg.beta))

    def pair_loss(self) -> PairLoss:
        return PairLoss("squared", beta=float(self.cfg.beta), tau=self.tau, alpha=0.0)

    def target_log_probs(self, oracle):
        if self._target is None:
            self._target = squared_loss_minimiser(oracle.ref_log_probs, oracle.rewards, self.cfg.pair_size,
                                                  self.tau, 0.0)
        return self._target
