"""`objective=dpo`: Direct Preference Optimisation (Rafailov et al. 2023) on (best, worst)-of-n pairs of reference
samples: minimise −log σ(β·(h(y_w) − h(y_l))), h = log π_θ/π_ref.

Exact target: none. Every pair with r(y_w) > r(y_l) has positive probability, so the population loss only reaches
its infimum 0 as h(y_w) − h(y_l) → ∞ for all of them: π_θ → the point mass on each prompt's highest-reward
response, whatever β (Azar et al. 2023, §4.2). β and the training budget decide how far along that path a run
ends; `target_log_probs` is None (no exact_kl_to_target column); `exact_kl_to_bon` is reported beside it."""

from __future__ import annotations


from vbon_exp.objectives.base import register_objective
from vbon_exp.objectives.preference_pairs import PreferenceObjective
from vbon_exp.trainers.preference_loop import PairLoss
from vbon_exp.settings.objective_pairs import DPOConfig


@register_objective
class DPOObjective(PreferenceObjective):
    name = "dpo"
    config = DPOConfig

    def pair_loss(self) -> PairLoss:
        return PairLoss("dpo", beta=float(self.cfg.beta))

    def target_log_probs(self, oracle):
        return None  # no finite minimiser (module docstring)
