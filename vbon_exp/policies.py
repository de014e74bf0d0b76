"""Policies the evaluator can sample and measure: an autoregressive model, or BoN over the reference.

Every policy samples (scored) responses for prompts, gives per-sample terms whose means estimate KL(policy‖π_ref),
and, on a task with an exact oracle, its exact distribution."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from vbon_exp import bon, kl
from vbon_exp.modeling import Samples, response_logits, token_log_probs
from vbon_exp.rewards import score_samples
from vbon_exp.sampling import SamplingConfig, sample_responses


class ModelPolicy:
    """An autoregressive LM sampled with the task's sampling settings."""

    def __init__(self, model, task, sampling: SamplingConfig, score_batch_size: int = 256):
        self.model, self.task, self.sampling, self.score_batch_size = model, task, sampling, score_batch_size

    def sample(self, prompts: list[list[int]], n: int, generator, desc: str | None = None) -> Samples:
        samples = sample_responses(
            self.model, prompts, n, self.sampling, eos_id=self.task.eos_id, pad_id=self.task.pad_id,
            generator=generator, desc=desc,
        )
        return score_samples(self.task.reward, samples, self.score_batch_size, what=desc or "policy samples")

    def at_temperature(self, temperature: float) -> ModelPolicy:
        """The same model sampled, and measured (its token log-probs and π_ref's in `kl_terms`), at `temperature`."""
        if temperature == self.sampling.temperature:
            return self
        return ModelPolicy(self.model, self.task, replace(self.sampling, temperature=temperature),
                           self.score_batch_size)

    @torch.no_grad()
    def kl_terms(self, samples: Samples, cache=None, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Per-sample sequence-level terms of every KL estimator in vbon_exp.kl, each an unbiased estimate of
        KL(π_θ‖π_ref) on average (full: summed over response positions; k1, k3: of the sequence log-ratio)."""
        device = next(self.model.parameters()).device
        full, logp_seq, logq_seq = [], [], []
        for start in range(0, len(samples), batch_size):
            part = samples.select(slice(start, start + batch_size)).to(device)
            mask = part.response_mask.float()
            logp = response_logits(self.model, part, self.sampling.temperature)
            logq = response_logits(self.task.reference, part, self.sampling.temperature)
            full.append((kl.full(logp, logq) * mask).sum(-1).double().cpu())
            logp_seq.append(token_log_probs(logp, part).sum(-1).double().cpu())
            logq_seq.append(token_log_probs(logq, part).sum(-1).double().cpu())
        logp_t, logq_t = torch.cat(logp_seq), torch.cat(logq_seq)
        return {"full": torch.cat(full), "k1": kl.k1(logp_t, logq_t), "k3": kl.k3(logp_t, logq_t)}

    def exact_log_probs(self, oracle) -> torch.Tensor:
        return oracle.model_log_probs(self.model)


class BoNPolicy:
    """Best-of-N over the reference: N reference samples per output, the highest reward kept (first on ties)."""

    def __init__(self, reference: ModelPolicy, n: int):
        self.reference, self.n = reference, int(n)

    def sample(self, prompts: list[list[int]], n: int, generator, desc: str | None = None) -> Samples:
        pool = self.reference.sample(prompts, n * self.n, generator, desc=desc)
        groups = pool.rewards.view(len(prompts) * n, self.n)  # rows are grouped by prompt, in prompt order
        best = groups.argmax(dim=-1) + torch.arange(groups.shape[0]) * self.n
        return pool.select(best.to(pool.prompt_index.device))

    def at_temperature(self, temperature: float) -> BoNPolicy:
        """Best-of-N over π_ref at `temperature`: its N candidates are drawn at that temperature."""
        return BoNPolicy(self.reference.at_temperature(temperature), self.n)

    def kl_terms(self, samples: Samples, cache, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """k1 with log π_BoN/π_ref ≈ log N + (N−1)·log F̂(r(y)) from the reference cache (BoN has no token
        probabilities)."""
        log_f = cache.log_cdf_hat(samples.prompt_index, samples.rewards)
        return {"k1": bon.log_bon_ratio_estimate(log_f, self.n)}

    def analytic_kl(self) -> float:
        return bon.kl_bon_analytic(self.n) if self.n > 1 else 0.0

    def exact_log_probs(self, oracle) -> torch.Tensor:
        return oracle.bon_log_probs(self.n)


def stratified_mean_se(values: torch.Tensor, groups: torch.Tensor) -> tuple[float, float]:
    """Mean over groups of per-group means, and its standard error Σ_g var_g/n_g / G² (samples i.i.d. within a
    group; prompts are the fixed evaluation set)."""
    values, groups = values.double().cpu(), groups.cpu()
    ids = torch.unique(groups)
    means, var_terms = [], []
    for g in ids:
        v = values[groups == g]
        means.append(v.mean())
        var_terms.append(v.var(unbiased=True) / len(v) if len(v) > 1 else torch.tensor(math.nan))
    means_t = torch.stack(means)
    se = math.sqrt(float(torch.stack(var_terms).sum())) / len(ids)
    return float(means_t.mean()), se


class PooledBoN:
    """Best-of-N for several N at once, estimated from a pool of cached π_ref samples per test prompt (no sampling):
    `objective=bon objective.estimate=cache`. The evaluator reads the pool (`evaluate.evaluate_bon_pool`); nothing
    is sampled, so it has no `sample`."""

    def __init__(self, pool, ns: list[int]):
        self.pool, self.ns = pool, [int(n) for n in ns]  # pool: a reference.ReferenceCache of the test prompts

    def exact_log_probs(self, oracle, n: int) -> torch.Tensor:
        return oracle.bon_log_probs(n)
