"""conf/objective/{dpo,ipo,bonbon}.yaml: the preference objectives' settings (vbon_exp/objectives/dpo.py, ipo.py,
bonbon.py, preference_pairs.py), listed in vbon_exp.settings.objective.OBJECTIVE_SETTINGS; the loop they share is
the `preference:` node (vbon_exp/settings/train.py PreferenceTrainConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from vbon_exp.errors import ConfigError, check_number
from vbon_exp.settings.beta_n import ObjectiveConfig, is_number, whole


@dataclass
class PreferenceConfig(ObjectiveConfig):
    """What every preference objective's node has besides name, β and N (conf/objective/{dpo,ipo,bonbon}.yaml);
    the loop's settings, pairs per prompt included, are the shared `preference:` node."""

    trains_with: ClassVar[Optional[str]] = "preference"  # the `preference:` node (vbon_exp/trainers/preference_loop.py)

    @property
    def pair_size(self) -> int:
        """n: samples per pair."""
        return whole(self.n)

    def needs_whole_n(self) -> bool:
        return True  # N samples per pair

    def check(self, prefix: str = "objective") -> None:
        """Raise ConfigError naming `objective.<key>` for the first bad value."""
        super().check(prefix)
        if not is_number(self.beta) or self.beta <= 0:
            raise ConfigError(f"{prefix}.beta must be a number > 0 for objective={self.name}, got {self.beta!r}")
        self._check_pair_size(prefix)

    def _check_pair_size(self, prefix: str = "objective") -> None:
        n = whole(self.n)
        if n is None or n < 2:
            raise ConfigError(
                f"{prefix}.n must be a whole number ≥ 2 for objective={self.name} (the samples per pair; "
                f"N = 1/β + 1, so β = 1/(N − 1): 1, 1/3, 1/7, ...), got {self.n!r} ({prefix}.beta={self.beta!r})")


@dataclass
class DPOConfig(PreferenceConfig):
    """conf/objective/dpo.yaml."""

    method_label: ClassVar[str] = "DPO"  # the legend (declared, not a key)

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


@dataclass
class IPOConfig(DPOConfig):
    """conf/objective/ipo.yaml (the keys of dpo.yaml)."""

    method_label: ClassVar[str] = "IPO"  # the legend (declared, not a key)

    # Objective name (results column).
    name: str = "ipo"


@dataclass
class BoNBoNConfig(PreferenceConfig):
    """conf/objective/bonbon.yaml: N = 4 unless set (the samples per pair); β = 1/(N − 1) follows, or set β (a β
    sweep shared with vbon and kl_rl), then N = 1/β + 1 must be whole."""

    method_label: ClassVar[str] = "BoNBoN"  # the legend (declared, not a key)

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
        if not is_number(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"{prefix}.alpha must be in [0, 1] (the weight of BoNBoN's SFT term), got "
                              f"{self.alpha!r}")
