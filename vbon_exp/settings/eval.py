"""conf `eval:` (vbon_exp/evaluation/runner.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from vbon_exp.errors import ConfigError, check_choice, check_number
from vbon_exp.settings.beta_n import BON_POOL

# the KL estimators (vbon_exp.kl.KL_ESTIMATORS registers each under this name), and those an evaluated policy offers
# as its results' `kl` column (k2 is a training penalty only: biased as an estimate)
KL_ESTIMATOR_NAMES = ("k1", "k2", "k3", "full")
EVAL_KL_ESTIMATORS = ("k1", "k3", "full")


@dataclass
class EvalConfig:
    """conf `eval:`: evaluation on the task's test prompts."""

    # Policy samples per test prompt for reward, KL and win rate (≥ 1).
    samples_per_prompt: int = 256
    # Sequences per forward pass when computing log-probs for KL estimates (≥ 1).
    batch_size: int = 64
    # Pairs per reward-model call (≥ 1).
    score_batch_size: int = 256
    # Which KL estimate is the `kl` column (the Pareto x-axis; vbon_exp/kl.py): auto (full where the policy has
    # token distributions, else k1) | full | k1 | k3. Every estimate the policy offers is reported as kl_<name>.
    kl_estimator: str = "auto"
    # Temperatures (each > 0) at which the trained policy is evaluated, one results line each (`eval_temperature`),
    # each against π_ref at that temperature (its own reference cache; BoN draws its N from it); null = the
    # sampling temperature alone.
    temperatures: Optional[list[float]] = None
    # Extra reward models that judge the same evaluation samples: names of conf/reward/<name>.yaml (e.g. [vader]);
    # each adds judge/<name>/reward and judge/<name>/win_rate (against π_ref samples scored by that judge).
    judges: list[str] = field(default_factory=list)
    # Bootstrap replicates (seeded) for the SEs into which cached reference samples enter: win rates (judges' too),
    # BoN's k1 KL, everything estimated from the BoN pool. Policy samples and caches are resampled jointly, per
    # prompt. 0 = off: those SEs then cover the policy samples only (the BoN-pool SEs are not estimated: NaN).
    bootstrap: int = 200
    # π_ref samples per test prompt in the BoN pool (M_eval ≥ 2) of `objective=bon objective.estimate=cache` and the
    # pooled relatives of BoN: its own cache (key part purpose=bon_pool), disjoint from the test cache that the win
    # rates compare with; N ≤ M_eval.
    bon_pool_m: int = 256
    # Test prompts whose evaluation samples are saved in samples.parquet (and the wandb Table `samples`), all of
    # each prompt's samples: the first `samples` prompts (≥ 0; 512 = every test prompt of the paper's IMDB and
    # TL;DR tasks). About 0.2–0.4 kB a sample on disk.
    samples: int = 512
    # Inference-time best-of-N′ of the evaluated policy (InfAlign's inference-time view): N′ values, positive
    # integers in increasing order, each ≤ eval.samples_per_prompt (the policy's pool: its evaluation samples) and ≤
    # eval.bon_pool_m (π_ref's: the BoN pool). Per N′ the results columns inference_reward_<N′> (reward of the best
    # of N′ policy samples), inference_win_rate_<N′> (it against the best of N′ π_ref samples, ties ½),
    # inference_win_rate_vs_ref_<N′> (against one π_ref sample) and inference_worst_reward_<N′> (the worst of N′),
    # each with _se and exact_ twins on the synthetic task: unbiased U-statistics over the pools
    # (vbon_exp/evaluation/inference_bon.py). Policies that sample only (BoN from the pool and its pooled relatives
    # get none). null or [] = off.
    inference_n: Optional[list[int]] = None

    def check(self, prefix: str = "eval") -> None:
        check_number(f"{prefix}.samples_per_prompt", self.samples_per_prompt, integer=True, minimum=1)
        check_number(f"{prefix}.bootstrap", self.bootstrap, integer=True, minimum=0)
        check_number(f"{prefix}.bon_pool_m", self.bon_pool_m, integer=True, minimum=2)
        check_number(f"{prefix}.batch_size", self.batch_size, integer=True, minimum=1)
        check_number(f"{prefix}.score_batch_size", self.score_batch_size, integer=True, minimum=1)
        check_number(f"{prefix}.samples", self.samples, integer=True, minimum=0)
        check_choice(f"{prefix}.kl_estimator", self.kl_estimator, ("auto", *EVAL_KL_ESTIMATORS))
        if self.temperatures is not None:
            if not self.temperatures:
                raise ConfigError(f"{prefix}.temperatures is empty: list one temperature or more, or null (the "
                                  "sampling temperature)")
            for i, t in enumerate(self.temperatures):
                check_number(f"{prefix}.temperatures[{i}]", t, exclusive_min=0)
            _no_repeats(f"{prefix}.temperatures", self.temperatures)
        _no_repeats(f"{prefix}.judges", self.judges)
        self._check_inference_n(prefix)

    def _check_inference_n(self, prefix: str) -> None:
        """Positive integers in increasing order, none beyond either pool they are estimated from."""
        ns = self.inference_n or []
        for i, n in enumerate(ns):
            check_number(f"{prefix}.inference_n[{i}]", n, integer=True, minimum=1)
        _no_repeats(f"{prefix}.inference_n", ns)
        if list(ns) != sorted(ns):
            raise ConfigError(f"{prefix}.inference_n must list N′ in increasing order, got {list(ns)}")
        for key, pool, what in (("samples_per_prompt", self.samples_per_prompt, "the policy's evaluation samples"),
                                ("bon_pool_m", self.bon_pool_m, "π_ref's BoN pool")):
            if ns and max(ns) > pool:
                raise ConfigError(f"{prefix}.inference_n={list(ns)}: N′ = {max(ns)} exceeds {prefix}.{key}={pool} "
                                  f"({what}, from which best-of-N′ is estimated): raise {prefix}.{key} or lower N′")

    def inference_ns(self) -> list[int]:
        """The inference-time N′ values (`inference_n`), [] when off."""
        return [int(n) for n in self.inference_n or []]

    def inference_caches(self) -> dict[str, int]:
        """The evaluation caches inference-time best-of-N′ reads: π_ref's BoN pool where `inference_n` is on (the one
        rule: the objectives' declarations and the sampled policies' caches both ask here)."""
        return {BON_POOL: self.bon_pool_m} if self.inference_ns() else {}

    def temperatures_at(self, sampling_temperature: float) -> list[float]:
        """The evaluation temperatures: `temperatures`, or the sampling temperature alone (null). The one rule."""
        return list(self.temperatures or [sampling_temperature])

    def memory_bytes(self, num_prompts: int, sequence_tokens: int, response_tokens: int, vocab_size: int) -> int:
        """At least what evaluation holds: every sample's ids and masks (int64), and one KL batch's two float32
        log-distributions [batch, response length, vocabulary]."""
        samples = num_prompts * self.samples_per_prompt * sequence_tokens * 2 * 8
        logits = 2 * self.batch_size * response_tokens * vocab_size * 4
        return samples + logits


def _no_repeats(key: str, values) -> None:
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    if repeated:
        raise ConfigError(f"{key} lists {repeated} more than once")
