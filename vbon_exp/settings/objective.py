"""conf/objective/<name>.yaml: each objective's settings and what it declares about itself (vbon_exp/objectives/*.py
implement them under the same names). Declared here, read everywhere, so no module keeps a list of objective names:
`method_label` (the legend; results column objective_label; `legend()`: a run's own), `trains_with` (the trainer
node: algo | sft | preference | None), `cache_splits()` (the reference caches its training reads),
`evaluation_caches(eval)` (extra test caches), `check_run(settings)` (rules tying it to the rest of the run)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from omegaconf import MISSING

from vbon_exp.errors import ConfigError, check_choice, check_number
from vbon_exp.settings.beta_n import BetaFirstConfig, NFirstConfig, ObjectiveConfig, PoolNConfig
from vbon_exp.settings.objective_pairs import BoNBoNConfig, DPOConfig, IPOConfig
from vbon_exp.settings.objective_poisson import BestOfPoissonConfig
from vbon_exp.settings.objective_inference import BoNAwareConfig

# The sequence rewards Φ an RL objective may train on (vbon_exp.bon.REWARD_TRANSFORMS implements each), and those
# that read the reference cache's F̂ (the objective then needs the train prompts' cache).
REWARD_TRANSFORM_NAMES = ("identity", "log_cdf", "exact", "cdf", "exp_cdf")
TRANSFORMS_NEEDING_CDF = ("log_cdf", "exact", "cdf", "exp_cdf")
# objective.bound of vbon -> its reward transform
BOUNDS = {"l1": "log_cdf", "exact": "exact"}


class RLSettings:
    """What the RL objectives declare (mixed into their configs): they train with conf/algo on a sequence reward
    Φ (`reward_transform`, a name in REWARD_TRANSFORM_NAMES) and read the train cache when Φ needs F̂."""

    trains_with: ClassVar[Optional[str]] = "algo"  # its trainer node

    def cache_splits(self) -> tuple[str, ...]:
        return ("train",) if self.reward_transform in TRANSFORMS_NEEDING_CDF else ()


def rounds_for(n, round_n: int, prefix: str = "objective") -> int:
    """R with round_n^R = N (a ConfigError when N is not such a power)."""
    rounds = round(math.log(float(n)) / math.log(round_n)) if float(n) >= 1 else 0
    if rounds < 1 or round_n ** rounds != int(round(float(n))) or abs(float(n) - round_n ** rounds) > 1e-9 * n:
        raise ConfigError(f"{prefix}.n={n} must be a power of {prefix}.round_n={round_n} (N = n^rounds, "
                          f"e.g. {round_n}, {round_n ** 2}, {round_n ** 3}; β = 1/(N − 1))")
    return rounds


@dataclass
class BoNConfig(PoolNConfig):
    """conf/objective/bon.yaml."""

    method_label: ClassVar[str] = "BoN (sampling)"  # the legend (declared, not a key)

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

    def evaluation_caches(self, eval_settings) -> dict[str, int]:
        if self.estimate == "cache":
            return super().evaluation_caches(eval_settings)
        return ObjectiveConfig.evaluation_caches(self, eval_settings)  # drawn BoN: the pool only for eval.inference_n

    def variant(self) -> Optional[str]:
        return "drawn" if self.estimate == "sample" else None  # fresh draws: the pool's check, with judge columns

    def check_run(self, settings) -> None:
        if self.estimate == "cache":
            self.check_pool(settings, " (or set objective.estimate=sample)")


@dataclass
class BoNSFTConfig(NFirstConfig):
    """conf/objective/bon_sft.yaml."""

    method_label: ClassVar[str] = "BoN-SFT"  # the legend (declared, not a key)
    trains_with: ClassVar[Optional[str]] = "sft"  # its trainer node

    # Objective name (results column).
    name: str = "bon_sft"


@dataclass
class RegularisedBoNConfig(NFirstConfig):
    """conf/objective/regularised_bon.yaml."""

    method_label: ClassVar[str] = "regularised BoN"  # the legend (declared, not a key)

    # Objective name (results column).
    name: str = "regularised_bon"
    # λ ≥ 0: the weight of log π_ref(y|x) in the score r(y) + λ·log π_ref(y|x) (0: BoN), in reward units per nat.
    lam: float = 0.05

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_number(f"{prefix}.lam", self.lam, minimum=0)

    def variant(self) -> Optional[str]:
        return f"λ={self.lam:g}"


@dataclass
class RejectionBoNConfig(PoolNConfig):
    """conf/objective/rejection_bon.yaml."""

    method_label: ClassVar[str] = "rejection BoN"  # the legend (declared, not a key)

    # Objective name (results column).
    name: str = "rejection_bon"
    # τ as a quantile q ∈ (0, 1) of π_ref's reward distribution of each prompt (null when `threshold` is set).
    quantile: Optional[float] = 0.9
    # τ as one reward value for every prompt (set it and quantile=null).
    threshold: Optional[float] = None

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        if (self.quantile is None) == (self.threshold is None):
            raise ConfigError(f"{prefix}.quantile and {prefix}.threshold: set exactly one (the other null), got "
                              f"{self.quantile!r} and {self.threshold!r}")
        if self.quantile is not None:
            check_number(f"{prefix}.quantile", self.quantile, exclusive_min=0, maximum=1)
        check_number(f"{prefix}.threshold", self.threshold, allow_none=True)

    def variant(self) -> Optional[str]:
        return f"τ={self.threshold:g}" if self.threshold is not None else f"τ=q{self.quantile:g}"


@dataclass
class SoftBoNConfig(PoolNConfig):
    """conf/objective/soft_bon.yaml."""

    method_label: ClassVar[str] = "soft BoN"  # the legend (declared, not a key)

    # Objective name (results column).
    name: str = "soft_bon"
    # λ (> 0, reward units): the softmax temperature of the choice among the N samples (λ → 0: BoN, λ → ∞: π_ref).
    lam: float = 0.1
    # The subset budget per N (≥ 1): every N-subset of each prompt's BoN pool where C(M, N) fits in it (the complete
    # U-statistic), else this many random ones, redrawn in every bootstrap replicate (the incomplete U-statistic).
    subsets: int = 256

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_number(f"{prefix}.lam", self.lam, exclusive_min=0)
        check_number(f"{prefix}.subsets", self.subsets, integer=True, minimum=1)

    def variant(self) -> Optional[str]:
        return f"λ={self.lam:g}"


@dataclass
class VBoNConfig(RLSettings, BetaFirstConfig):
    """conf/objective/vbon.yaml."""

    method_label: ClassVar[str] = "vBoN"  # the legend (declared, not a key)

    # Objective name (results column).
    name: str = "vbon"
    # Which bound: l1 (log F̂, the paper's experiments) | exact (β·log π_BoN/π_ref with F̂ plugged in).
    bound: str = "l1"
    # Scale of the exact bound: beta (1/(N−1), optimum π_BoN) | seed (1/N, as the seed code; optimum differs).
    exact_scale: str = "beta"

    @property
    def reward_transform(self) -> str:
        return BOUNDS[self.bound]

    def needs_whole_n(self) -> bool:
        return self.bound == "exact"  # the binomial sum runs to N; the l1 bound takes any β

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_choice(f"{prefix}.bound", self.bound, BOUNDS)
        check_choice(f"{prefix}.exact_scale", self.exact_scale, ("beta", "seed"))


@dataclass
class KLRLConfig(RLSettings, BetaFirstConfig):
    """conf/objective/kl_rl.yaml."""

    method_label: ClassVar[str] = "KL-regularised RL"  # the legend (declared, not a key)

    # Objective name (results column).
    name: str = "kl_rl"
    # The sequence reward Φ, a transform in vbon_exp.bon.REWARD_TRANSFORMS: identity (r) | log_cdf (log F̂) |
    # cdf (F̂) | exp_cdf (exp(t·F̂)); the F̂ transforms read the train prompts' reference cache.
    transform: str = "identity"
    # The exponent t of transform=exp_cdf (Φ = exp(t·F̂); t > 0 favours the top quantiles, InfAlign's best-of-N).
    t: float = 1.0

    @property
    def reward_transform(self) -> str:
        return self.transform

    def variant(self) -> Optional[str]:
        if self.transform == "identity":
            return None
        return f"{self.transform} t={self.t:g}" if self.transform == "exp_cdf" else self.transform

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_choice(f"{prefix}.transform", self.transform, REWARD_TRANSFORM_NAMES)
        check_number(f"{prefix}.t", self.t)


@dataclass
class BONDConfig(RLSettings, NFirstConfig):
    """conf/objective/bond.yaml."""

    method_label: ClassVar[str] = "BOND (Jeffreys)"  # the legend (declared, not a key)
    reward_transform: ClassVar[str] = "log_cdf"  # the backward term: vBoN's l1 bound

    # Objective name (results column).
    name: str = "bond"
    # Jeffreys weight w ∈ [0, 1] of the backward KL(π_θ‖π_BoN); the forward KL(π_BoN‖π_θ) gets 1 − w. 1 = vBoN
    # (l1) exactly, 0 = the forward KL alone. 0.5: the BOND paper's Jeffreys mix (Sessa et al. 2024, J-BOND).
    jeffreys_weight: float = 0.5
    # BoN(N) samples of π_ref per train prompt for the forward term, drawn once per run (as many as BoN-SFT's).
    forward_samples_per_prompt: int = "${sft.samples_per_prompt}"  # type: ignore[assignment]  (resolved to int)

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_number(f"{prefix}.jeffreys_weight", self.jeffreys_weight, minimum=0, maximum=1)
        check_number(f"{prefix}.forward_samples_per_prompt", self.forward_samples_per_prompt, integer=True,
                     minimum=1)


@dataclass
class BONDIterativeConfig(NFirstConfig):
    """conf/objective/bond_iterative.yaml. objective.n (or β, N = 1/β + 1) is the effective N = round_n^rounds the
    run aims at: a power of round_n (2: N = 2, 4, 8, 16, ...)."""

    method_label: ClassVar[str] = "iterative BOND"  # the legend (declared, not a key)
    trains_with: ClassVar[Optional[str]] = "algo"  # its trainer node
    policy_copies: ClassVar[int] = 1  # the anchor

    # Objective name (results column).
    name: str = "bond_iterative"
    # n of each round's best-of-n of the anchor (integer ≥ 2); the per-round KL coefficient is 1/(n − 1).
    round_n: int = 2
    # The moving anchor: copy (a copy of π_θ, replaced each round: iterative BOND) | ema (J-BOND's EMA of π_θ).
    anchor: str = "copy"
    # anchor=copy: updates per round (null: the run split into log_{round_n} N equal rounds).
    anchor_every: Optional[int] = None
    # anchor=ema: the decay γ of anchor ← γ·anchor + (1 − γ)·π_θ after every update (null: 1 − (rounds − 1)/updates).
    ema: Optional[float] = None
    # Fresh anchor samples per prompt for F̂_anchor (and the BoN_n anchor samples), after each anchor change.
    anchor_samples: int = "${reference.m}"  # type: ignore[assignment]  (resolved to int)
    # Jeffreys weight w of the backward KL(π_θ‖BoN_n(π_anchor)); 1 − w on the forward KL (as objective=bond).
    jeffreys_weight: float = 0.5
    # J-BOND's extra KL(π_θ‖π_ref) regulariser, added to the loss with this coefficient (0 = off).
    ref_kl: float = 0.0

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        check_number(f"{prefix}.round_n", self.round_n, integer=True, minimum=2)
        check_choice(f"{prefix}.anchor", self.anchor, ("copy", "ema"))
        check_number(f"{prefix}.anchor_every", self.anchor_every, integer=True, minimum=1, allow_none=True)
        check_number(f"{prefix}.ema", self.ema, minimum=0, maximum=1, allow_none=True)
        check_number(f"{prefix}.anchor_samples", self.anchor_samples, integer=True, minimum=self.round_n)
        check_number(f"{prefix}.jeffreys_weight", self.jeffreys_weight, minimum=0, maximum=1)
        check_number(f"{prefix}.ref_kl", self.ref_kl, minimum=0)
        rounds_for(self.n, self.round_n, prefix)


@dataclass
class ExternalConfig(ObjectiveConfig):
    """conf/objective/external.yaml."""

    method_label: ClassVar[str] = "external policy"  # the legend (declared, not a key)

    # Objective name (results column).
    name: str = "external"
    # The policy: a directory in save_pretrained layout (config, safetensors weights, tokenizer) or a hub id.
    policy: str = MISSING
    # Its legend label in the Pareto plot (results column objective_label); null = the policy's name.
    label: Optional[str] = None
    # Weights dtype: null (as saved) | float32 | bfloat16 | float16.
    dtype: Optional[str] = None
    # Run code shipped with the policy's repository (off unless you trust it).
    trust_remote_code: bool = False

    def check(self, prefix: str = "objective") -> None:
        super().check(prefix)
        if not isinstance(self.policy, str) or not self.policy.strip():
            raise ConfigError(f"{prefix}.policy must be a directory or a hub id of the policy to evaluate")
        check_choice(f"{prefix}.dtype", self.dtype, (None, "float32", "bfloat16", "float16"))

    def legend(self) -> str:
        return self.label or Path(self.policy.rstrip("/")).name or self.policy


# objective.name -> its settings (vbon_exp.objectives.OBJECTIVES implements each under the same name)
OBJECTIVE_SETTINGS: dict[str, type[ObjectiveConfig]] = {
    cls.name: cls for cls in (BoNConfig, BoNSFTConfig, RegularisedBoNConfig, RejectionBoNConfig, SoftBoNConfig,
                              VBoNConfig, KLRLConfig, BONDConfig, BONDIterativeConfig, DPOConfig, IPOConfig,
                              BoNBoNConfig, ExternalConfig, BoNAwareConfig, BestOfPoissonConfig)
}
