"""An exactly solvable alignment task.

A tiny GPT-2 (random weights from a fixed seed) over a vocabulary of V symbols writes responses of exactly L tokens
(no EOS), so every response can be enumerated: V^L per prompt (6^5 = 7,776 by default). The reward is a fixed
random function of (last prompt token, response) with (almost surely) distinct values, or, with `reward_levels`, that
function rounded to a few levels (many responses tie: the discrete-reward case of BoN). Everything the paper
defines is then computable exactly: π_ref(y|x), F_x, π_BoN for any N, π* ∝ π_ref·exp(r/β), and KLs of any policy.

The model, tokenizer and reward table are written with `save_pretrained` / safetensors and read back with
`from_pretrained`, like any real model, so the synthetic task runs the same loading code as the real tasks.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vbon_exp import bon
from vbon_exp.errors import ConfigError, check_number
from vbon_exp.modeling import Samples, load_causal_lm, load_tokenizer, sequence_log_probs
from vbon_exp.tasks.base import Task, prompts_digest

log = logging.getLogger(__name__)

SYMBOLS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class SyntheticSpec:
    """What determines the built artifacts (model weights, reward table, prompts): SyntheticTaskConfig's fields
    without the sampling defaults."""

    vocab_size: int
    response_length: int
    prompt_length: int
    num_prompts: int
    n_layer: int
    n_embd: int
    n_head: int
    init_std: float
    model_seed: int
    reward_seed: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- the reward


# Quantised rewards (`reward_levels` = L ≥ 2) are rounded to the nearest of L equally spaced values in this range
# (values outside clamp to its ends): the table reward has std ≈ 1, so most of π_ref's mass lies inside.
LEVEL_RANGE = (-2.0, 2.0)


class TabularReward:
    """r(x, y) = Σ_t W[t, y_t] + Σ_t U[y_t, y_{t+1}] + Σ_t Q[x_last, y_t]: position, transition and
    prompt-interaction terms with Gaussian weights, so rewards are distinct with probability 1; with `levels` ≥ 2,
    rounded to the nearest of that many equally spaced values in LEVEL_RANGE (ties by design)."""

    name = "synthetic-tabular"

    def __init__(self, tables: dict[str, torch.Tensor], fingerprint: str, levels: int = 0):
        self.w, self.u, self.q = tables["w"], tables["u"], tables["q"]
        self.levels = int(levels)
        # caches are keyed by the fingerprint: quantised rewards are another reward (the default keeps its old key)
        self.fingerprint = fingerprint + (f":levels{self.levels}" if self.levels else "")

    @classmethod
    def random(cls, spec: SyntheticSpec) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(spec.reward_seed)
        v, length = spec.vocab_size, spec.response_length
        scale = (3 * length - 1) ** -0.5  # reward std ≈ 1
        return {
            "w": torch.randn(length, v, generator=g, dtype=torch.float64) * scale,
            "u": torch.randn(v, v, generator=g, dtype=torch.float64) * scale,
            "q": torch.randn(v, v, generator=g, dtype=torch.float64) * scale,
        }

    @classmethod
    def from_pretrained(cls, directory: str | Path, levels: int = 0) -> "TabularReward":
        path = Path(directory) / "reward.safetensors"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return cls(load_file(str(path)), fingerprint=f"{cls.name}:{digest}", levels=levels)

    def score_ids(self, prompt_last: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
        """float64 rewards for [B] last prompt tokens and [B, L] responses."""
        prompt_last, response_ids = prompt_last.cpu(), response_ids.cpu()
        length = response_ids.shape[1]
        r = self.w[torch.arange(length), response_ids].sum(-1)
        r = r + self.u[response_ids[:, :-1], response_ids[:, 1:]].sum(-1)
        r = r + self.q[prompt_last[:, None], response_ids].sum(-1)
        return quantise(r, self.levels) if self.levels else r

    def __call__(self, samples: Samples) -> torch.Tensor:
        # rewards are float32 everywhere in the pipeline (cache, comparisons), as a neural reward model's would be
        return self.score_ids(samples.prompt_ids[:, -1], samples.response_ids).float()


def quantise(rewards: torch.Tensor, levels: int) -> torch.Tensor:
    """Each reward rounded to the nearest of `levels` equally spaced values spanning LEVEL_RANGE (clamped to it)."""
    low, high = LEVEL_RANGE
    step = (high - low) / (levels - 1)
    return low + torch.round((rewards.clamp(low, high) - low) / step) * step


# --------------------------------------------------------------------------- building the artifacts


def _make_tokenizer(spec: SyntheticSpec):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {SYMBOLS[i]: i for i in range(spec.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _make_model(spec: SyntheticSpec):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=spec.vocab_size,
        n_positions=spec.prompt_length + spec.response_length,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        initializer_range=spec.init_std,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.model_seed)
    return GPT2LMHeadModel(config)


def ensure_artifacts(spec: SyntheticSpec, root: str | Path) -> Path:
    """Build (once) and return the directory holding the synthetic model, tokenizer and reward table.

    Built in a temp dir and renamed into place, so a crash never leaves a half-written model behind."""
    target = Path(root) / f"synthetic-{spec.digest()}"
    if (target / "spec.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-synthetic-"))
    try:
        _make_model(spec).save_pretrained(tmp)
        _make_tokenizer(spec).save_pretrained(tmp)
        save_file(TabularReward.random(spec), str(tmp / "reward.safetensors"))
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built synthetic task artifacts in %s", target)
    return target


def _weights_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith((".safetensors", ".json")):
            h.update(name.encode())
            h.update((directory / name).read_bytes())
    return h.hexdigest()[:16]


def _choose_prompts(spec: SyntheticSpec) -> list[list[int]]:
    all_prompts = list(itertools.product(range(spec.vocab_size), repeat=spec.prompt_length))
    if spec.num_prompts > len(all_prompts):
        raise ValueError(
            f"task.num_prompts={spec.num_prompts} exceeds the {len(all_prompts)} distinct prompts of "
            f"length {spec.prompt_length} over {spec.vocab_size} symbols"
        )
    g = torch.Generator().manual_seed(spec.model_seed + 1)
    pick = torch.randperm(len(all_prompts), generator=g)[: spec.num_prompts].sort().values
    return [list(all_prompts[int(i)]) for i in pick]


# --------------------------------------------------------------------------- the exact oracle


class SyntheticOracle:
    """Exact distributions over all V^L responses of each prompt, at the task's sampling temperature."""

    def __init__(self, spec: SyntheticSpec, prompts: list[list[int]], reward: TabularReward, temperature: float):
        self.spec, self.prompts, self.temperature = spec, prompts, temperature
        self.responses = torch.tensor(
            list(itertools.product(range(spec.vocab_size), repeat=spec.response_length)), dtype=torch.long
        )  # [K, L]
        k, p = self.responses.shape[0], len(prompts)
        prompt_ids = torch.tensor(prompts, dtype=torch.long)
        self.rewards = torch.stack(
            [reward.score_ids(prompt_ids[i].expand(k, -1)[:, -1], self.responses).float().double() for i in range(p)]
        )  # [P, K], float32 values (as the pipeline sees them), held in float64
        self._ref_logp = None

    @property
    def num_responses(self) -> int:
        return int(self.responses.shape[0])

    def all_pairs(self, prompt_i: int) -> Samples:
        k = self.num_responses
        p_ids = torch.tensor(self.prompts[prompt_i], dtype=torch.long).expand(k, -1).contiguous()
        return Samples(
            torch.full((k,), prompt_i, dtype=torch.long), p_ids, torch.ones_like(p_ids), self.responses,
            torch.ones_like(self.responses),
        )

    def model_log_probs(self, model, batch_size: int = 4096) -> torch.Tensor:
        """Exact log π(y|x) of an autoregressive model at the task temperature, [P, K] float64."""
        # a float64 CPU copy: exact values must not carry float32 round-off (sums to 1 within 1e-12)
        model64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
        rows = [
            sequence_log_probs(model64, self.all_pairs(i), self.temperature, batch_size)
            for i in range(len(self.prompts))
        ]
        return torch.stack(rows)

    def set_reference(self, model) -> None:
        self._ref_logp = self.model_log_probs(model)

    def at_temperature(self, temperature: float, reference) -> SyntheticOracle:
        """The oracle of the same prompts and rewards at another temperature: π_ref (`reference` sampled at
        `temperature`) and every model's exact distribution (`model_log_probs`) at that temperature."""
        other = copy.copy(self)  # responses and rewards are shared: they do not depend on the temperature
        other.temperature = temperature
        other.set_reference(reference)
        return other

    @property
    def ref_log_probs(self) -> torch.Tensor:
        if self._ref_logp is None:
            raise RuntimeError("SyntheticOracle.set_reference(model) must be called first")
        return self._ref_logp

    def bon_log_probs(self, n: int) -> torch.Tensor:
        return bon.bon_log_probs(self.ref_log_probs, self.rewards, n)

    def optimum_log_probs(self, beta: float) -> torch.Tensor:
        return bon.kl_regularised_optimum_log_probs(self.ref_log_probs, self.rewards, beta)

    def transform_optimum_log_probs(self, transform: str, beta: float, n: float | None = None,
                                    exact_scale: str = "beta", t: float = 1.0) -> torch.Tensor:
        """log π* for π* ∝ π_ref·exp(Φ(y)/β), Φ the named reward transform of vbon_exp.bon.REWARD_TRANSFORMS fed
        the exact quantile F_x(r(y)) = P(r ≤ r(y)) under π_ref in place of the cache's F̂: the optimum of KL-RL with
        a calibrated reward (identity gives `optimum_log_probs`; log_cdf with β = 1/(N−1) gives π_BoN for
        continuous rewards, since π_BoN ∝ π_ref·F^(N−1))."""
        log_le, _, _ = bon.log_reward_cdfs(self.ref_log_probs, self.rewards)
        inputs = bon.TransformInputs(self.rewards, log_le, self.ref_log_probs, n, exact_scale, t)
        phi = bon.REWARD_TRANSFORMS[transform](inputs)
        return bon.kl_regularised_optimum_log_probs(self.ref_log_probs, phi, beta)

    def policy_bon_log_probs(self, logp: torch.Tensor, n: float) -> torch.Tensor:
        """Exact log BoN_n(π) of any policy π given its exact log-probs [P, K] (iterative BOND's per-round target:
        best-of-n of the anchor)."""
        return bon.bon_log_probs(logp, self.rewards, n)

    def index_of(self, samples: Samples) -> torch.Tensor:
        """Position of each sampled response in the enumeration (base-V number)."""
        v, length = self.spec.vocab_size, self.spec.response_length
        weights = v ** torch.arange(length - 1, -1, -1)
        return (samples.response_ids.cpu() * weights).sum(-1)

    def metrics(self, logp: torch.Tensor, target_logp: torch.Tensor | None = None) -> dict[str, float]:
        """Exact reward, KL to π_ref, win rate vs one reference sample (ties ½) and KL to a target, averaged over
        prompts."""
        p = logp.exp()
        f_le, f_lt = bon.reward_cdfs(self.ref_log_probs, self.rewards)
        out = {
            "exact_reward": float((p * self.rewards).sum(-1).mean()),
            "exact_kl": float(bon.kl(logp, self.ref_log_probs).mean()),
            "exact_win_rate": float((p * 0.5 * (f_le + f_lt)).sum(-1).mean()),
        }
        if target_logp is not None:
            out["exact_kl_to_target"] = float(bon.kl(logp, target_logp).mean())
        return out

    # ----------------------------------------------------------------------- the exact Pareto frontier
    #
    # The frontier of a utility u (the reward r, or the win probability W against one π_ref sample) is
    # U(k) = max {E[u] : KL(π‖π_ref) ≤ k} over ALL policies, E and KL averaged over the prompts as `metrics` does.
    # For k below the greedy policy's KL it is attained by π*_β ∝ π_ref·exp(u/β) with the ONE β whose average KL is
    # k: π*_β maximises the prompt-separable Lagrangian E[u] − β·KL, so any π with KL(π) ≤ KL(π*_β) has
    # E_π[u] ≤ E_π*[u] − β·(KL(π*_β) − KL(π)) ≤ E_π*[u]. A β per prompt would maximise a differently weighted
    # Lagrangian and spend the KL budget worse; the greedy policy (β → 0) gives U(k) = max u beyond its KL.
    # KL(π*_β) decreases in β, so U(k) is found by bisection on log β.

    FRONTIER_UTILITIES = ("reward", "win_rate")

    def frontier_utility(self, utility: str) -> torch.Tensor:
        """u(x, y) [P, K]: the reward, or the win probability against a π_ref sample, ties ½ (`exact_win_rate`)."""
        if utility == "reward":
            return self.rewards
        if utility == "win_rate":
            f_le, f_lt = bon.reward_cdfs(self.ref_log_probs, self.rewards)
            return 0.5 * (f_le + f_lt)
        raise ValueError(f"frontier utility must be one of {self.FRONTIER_UTILITIES}, got {utility!r}")

    def _optimum_points(self, u: torch.Tensor, log_betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(average KL, average E[u]) of π*_β ∝ π_ref·exp(u/β) for each β = exp(log_betas) [B], one β for all
        prompts: two [B] tensors."""
        logp = bon.kl_regularised_optimum_log_probs(self.ref_log_probs, u, log_betas.exp()[:, None, None])
        p = logp.exp()
        return bon.kl(logp, self.ref_log_probs).mean(-1), (p * u).sum(-1).mean(-1)

    def _reference_value(self, u: torch.Tensor) -> float:
        """The average E_π_ref[u]: the frontier at KL 0."""
        return float((self.ref_log_probs.exp() * u).sum(-1).mean())

    def _greedy(self, u: torch.Tensor) -> tuple[float, float]:
        """(average KL, average u) of the β → 0 limit: each prompt's best response (ties share π_ref's mass)."""
        top = u == u.max(-1, keepdim=True).values
        log_mass = torch.logsumexp(self.ref_log_probs.masked_fill(~top, -math.inf), dim=-1)
        return float(-log_mass.mean()), float(u.max(-1).values.mean())

    def _beta_range(self, u: torch.Tensor) -> tuple[float, float]:
        """log β bounds: far beyond the utility's spread (KL(π*) ≈ 0) and far below its smallest gap (≈ greedy)."""
        spread = float((u.max(-1).values - u.min(-1).values).max())
        return math.log(spread) - 30.0, math.log(spread) + 15.0

    def _log_beta_at_kl(self, u: torch.Tensor, kl: float) -> float:
        """log β of the π*_β whose average KL is kl (0 < kl < the greedy KL): bisection, KL(π*_β) ↓ in β. Returns
        the upper end, whose KL is ≤ kl by at most float64 round-off."""
        lo, hi = self._beta_range(u)  # KL(lo) ≈ greedy KL > kl > KL(hi) ≈ 0
        for _ in range(200):  # the interval halves each time: 45 nats of log β to float64 resolution
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            mid_kl, _ = self._optimum_points(u, torch.tensor([mid], dtype=torch.float64))
            lo, hi = (mid, hi) if float(mid_kl) > kl else (lo, mid)
        return hi

    def frontier_at_kl(self, kl: float, utility: str = "reward") -> float:
        """U(kl): the highest exact average utility of any policy with average exact KL ≤ kl (see above)."""
        u = self.frontier_utility(utility)
        greedy_kl, greedy_value = self._greedy(u)
        if kl >= greedy_kl:
            return greedy_value
        if kl <= 0:
            return self._reference_value(u)
        log_beta = torch.tensor([self._log_beta_at_kl(u, kl)], dtype=torch.float64)
        return float(self._optimum_points(u, log_beta)[1])

    def frontier_regret(self, exact: dict) -> dict[str, float]:
        """How far below the exact frontier a policy's exact point is, at its own exact KL: `exact_regret`
        (reward) and `exact_win_rate_regret`, from `metrics`' exact_kl, exact_reward and exact_win_rate. ≥ 0 up
        to round-off for every policy; 0 for π*_β of that utility."""
        return {"exact_regret": self.frontier_at_kl(exact["exact_kl"], "reward") - exact["exact_reward"],
                "exact_win_rate_regret": self.frontier_at_kl(exact["exact_kl"], "win_rate") - exact["exact_win_rate"]}

    def frontier_curves(self, points: int = 200, max_n: float = 2.0**14) -> dict[str, dict[str, list[float]]]:
        """The curves the Pareto plot draws under the exact points: the reward and win-rate frontiers (π*_β of each
        utility over a log-spaced β grid, from near π_ref to near greedy, then the greedy point) and π_BoN over
        real N from 1 to max_n. Each: {"kl": [...], "reward" or "win_rate": [...]}, by increasing KL; π_BoN's
        carries both metrics."""
        utilities = {name: self.frontier_utility(name) for name in self.FRONTIER_UTILITIES}
        curves = {}
        for name, u in utilities.items():
            greedy_kl, greedy_value = self._greedy(u)
            # from KL 1e-4 to 99.9% of the greedy KL: the rest of a log β grid would crowd onto the two ends
            ends = [self._log_beta_at_kl(u, k) for k in (1e-4, 0.999 * greedy_kl)]
            kl, value = self._optimum_points(u, torch.linspace(*ends, points, dtype=torch.float64))
            curves[f"optimum_{name}"] = {"kl": [0.0, *kl.tolist(), greedy_kl],
                                         name: [self._reference_value(u), *value.tolist(), greedy_value]}
        bon_curve: dict[str, list[float]] = {"kl": [], **{name: [] for name in utilities}}
        for n in torch.logspace(0, math.log10(max_n), points // 4, dtype=torch.float64).tolist():
            logp = self.bon_log_probs(n)
            bon_curve["kl"].append(float(bon.kl(logp, self.ref_log_probs).mean()))
            for name, u in utilities.items():
                bon_curve[name].append(float((logp.exp() * u).sum(-1).mean()))
        curves["bon"] = bon_curve
        return curves


# --------------------------------------------------------------------------- the task


@dataclass
class SyntheticTaskConfig:
    """conf/task/synthetic.yaml: an exactly solvable task. A tiny random GPT-2 over `vocab_size` symbols writes
    responses of exactly `response_length` tokens, so all vocab_size^response_length responses are enumerated and
    every quantity (π_ref, F, π_BoN, π*, KLs) is known exactly. Artifacts are built once under paths.cache_dir/models."""

    # Task name (results column; vbon_exp.tasks.TASKS).
    name: str = "synthetic"
    # Symbols in the vocabulary (responses use all of them).
    vocab_size: int = 6
    # Tokens per response (fixed; the model has no EOS).
    response_length: int = 5
    # Tokens per prompt.
    prompt_length: int = 2
    # Distinct prompts; the same prompts are used for training and testing.
    num_prompts: int = 4
    # Reference model size: GPT-2 layers.
    n_layer: int = 2
    # Reference model width.
    n_embd: int = 32
    # Reference model attention heads.
    n_head: int = 2
    # Std of the random weights: larger makes π_ref peakier (0.1: entropy 8.4 nats of log(7776) = 9.0).
    init_std: float = 0.1
    # Seed of the reference weights.
    model_seed: int = 0
    # Seed of the reward table.
    reward_seed: int = 0
    # Reward levels: 0 = the continuous table reward (distinct values); L ≥ 2 rounds it to the nearest of L equally
    # spaced values in [−2, 2] (clamped), so many responses tie (discrete rewards: BoN's tie-aware KL).
    reward_levels: int = 0
    # Default sampling temperature (sampling.* follows these unless overridden).
    temperature: float = 1.0
    # Default top-k (0 = off; the synthetic task's exact values need 0).
    top_k: int = 0
    # Default top-p (1 = off; the synthetic task's exact values need 1).
    top_p: float = 1.0
    # Default response length cap: the fixed response length.
    max_new_tokens: int = "${.response_length}"  # type: ignore[assignment]  (an interpolation, resolved to int)

    def check(self, prefix: str = "task") -> None:
        for key in ("vocab_size", "response_length", "prompt_length", "num_prompts", "n_layer", "n_embd", "n_head"):
            check_number(f"{prefix}.{key}", getattr(self, key), integer=True, minimum=1)
        check_number(f"{prefix}.init_std", self.init_std, exclusive_min=0)
        check_number(f"{prefix}.reward_levels", self.reward_levels, integer=True, minimum=0)
        if self.reward_levels == 1:
            raise ConfigError(f"{prefix}.reward_levels must be 0 (continuous) or ≥ 2, got 1")
        if self.vocab_size ** self.response_length > 10**7:
            raise ConfigError(f"{prefix}.vocab_size={self.vocab_size} ** {prefix}.response_length="
                              f"{self.response_length} responses are too many to enumerate exactly (limit 1e7)")

    def check_run(self, cfg) -> None:
        """Rules that tie the task to the rest of the run."""
        # the oracle enumerates the temperature-scaled model; a top-k/top-p sampler draws from another distribution
        for key, neutral in (("top_k", 0), ("top_p", 1.0)):
            value = cfg.sampling[key]
            if value != neutral:
                raise ConfigError(f"sampling.{key}={value} is not supported on the synthetic task (its exact values "
                                  f"describe the unfiltered sampler); use sampling.{key}={neutral}")
        if cfg.sampling.max_new_tokens != self.response_length:
            raise ConfigError(f"sampling.max_new_tokens must equal task.response_length={self.response_length} on "
                              "the synthetic task (responses have a fixed length and no EOS)")

    def sizes(self) -> dict:
        """What the memory pre-flight needs before anything is built."""
        return {"num_train_prompts": self.num_prompts, "num_test_prompts": self.num_prompts,
                "prompt_tokens": self.prompt_length, "vocab_size": self.vocab_size}


def build(cfg: SyntheticTaskConfig, *, device: torch.device, cache_dir: str, temperature: float, **_) -> Task:
    spec = SyntheticSpec(
        cfg.vocab_size, cfg.response_length, cfg.prompt_length, cfg.num_prompts, cfg.n_layer, cfg.n_embd, cfg.n_head,
        cfg.init_std, cfg.model_seed, cfg.reward_seed,
    )
    directory = ensure_artifacts(spec, Path(cache_dir) / "models")
    tokenizer = load_tokenizer(str(directory))
    reference = load_causal_lm(str(directory), device).eval().requires_grad_(False)
    reward = TabularReward.from_pretrained(directory, levels=cfg.reward_levels)
    prompts = _choose_prompts(spec)
    oracle = SyntheticOracle(spec, prompts, reward, temperature)
    oracle.set_reference(reference)
    return Task(
        name="synthetic",
        tokenizer=tokenizer,
        reference=reference,
        policy_init=str(directory),
        reward=reward,
        train_prompts=prompts,
        test_prompts=prompts,
        eos_id=None,
        pad_id=0,
        fingerprint={
            "reference": f"{directory.name}:{_weights_digest(directory)}",
            "reward": reward.fingerprint,
            "train_prompts": prompts_digest(prompts),
            "test_prompts": prompts_digest(prompts),
        },
        oracle=oracle,
    )
