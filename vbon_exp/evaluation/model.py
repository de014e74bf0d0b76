"""A model as a policy: an autoregressive LM sampled with the task's sampling settings — a policy trained here, or one
trained anywhere (`objective=external`) — measured with every KL estimator of vbon_exp/kl.py."""

from __future__ import annotations

from dataclasses import replace

import torch

from vbon_exp import kl
from vbon_exp.evaluation.policy import EvalContext
from vbon_exp.evaluation.sampled import SampledPolicy
from vbon_exp.logprobs import LOGITS_CHUNK, response_token_stats
from vbon_exp.modeling import Samples
from vbon_exp.rewards import score_samples
from vbon_exp.sampling import SamplingConfig, sample_responses


class ModelPolicy(SampledPolicy):
    """An autoregressive LM sampled with the task's sampling settings."""

    def __init__(self, model, task, sampling: SamplingConfig, score_batch_size: int = 256,
                 logits_chunk: int = LOGITS_CHUNK):
        self.model, self.task, self.sampling, self.score_batch_size = model, task, sampling, score_batch_size
        self.logits_chunk = logits_chunk  # positions whose vocabulary-sized log-probs are held at once

    def sample(self, prompts: list[list[int]], n: int, generator, desc: str | None = None) -> Samples:
        samples = sample_responses(
            self.model, prompts, n, self.sampling, eos_id=self.task.eos_id, pad_id=self.task.pad_id,
            generator=generator, desc=desc,
        )
        return score_samples(self.task.reward, samples, self.score_batch_size, what=desc or "policy samples")

    def at_temperature(self, temperature: float) -> ModelPolicy:
        """The same model sampled, and measured (its token log-probs and π_ref's), at `temperature`."""
        if temperature == self.sampling.temperature:
            return self
        return ModelPolicy(self.model, self.task, replace(self.sampling, temperature=temperature),
                           self.score_batch_size, self.logits_chunk)

    @torch.no_grad()
    def log_probs(self, samples: Samples, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Per sample: `full` = Σ_t KL(π_θ(·|x, y<t) ‖ π_ref(·|x, y<t)) over the response, and the sequence
        log-probs `logp_policy` = log π_θ(y|x), `logp_ref` = log π_ref(y|x) (float64 [B])."""
        device = next(self.model.parameters()).device
        full, logp_seq, logq_seq = [], [], []
        for start in range(0, len(samples), batch_size):
            part = samples.select(slice(start, start + batch_size)).to(device)
            stats = response_token_stats(self.model, part, self.sampling.temperature, chunk=self.logits_chunk,
                                         other=self.task.reference, kl=True)
            full.append(stats.kl.sum(-1).double().cpu())
            logp_seq.append(stats.logp.sum(-1).double().cpu())
            logq_seq.append(stats.other_logp.sum(-1).double().cpu())
        empty = torch.zeros(0, dtype=torch.float64)
        cat = (lambda parts: torch.cat(parts) if parts else empty)  # noqa: E731
        return {"full": cat(full), "logp_policy": cat(logp_seq), "logp_ref": cat(logq_seq)}

    def kl_terms(self, samples: Samples, cache=None, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Per-sample sequence-level terms of every KL estimator in vbon_exp.kl, each an unbiased estimate of
        KL(π_θ‖π_ref) on average (full: summed over response positions; k1, k3: of the sequence log-ratio)."""
        lp = self.log_probs(samples, batch_size)
        return {"full": lp["full"], "k1": kl.k1(lp["logp_policy"], lp["logp_ref"]),
                "k3": kl.k3(lp["logp_policy"], lp["logp_ref"])}

    def measure(self, samples: Samples, ctx: EvalContext) -> dict:
        lp = self.log_probs(samples, ctx.settings.batch_size)
        terms = {"full": lp["full"], "k1": kl.k1(lp["logp_policy"], lp["logp_ref"]),
                 "k3": kl.k3(lp["logp_policy"], lp["logp_ref"])}
        return {"kl": terms, "logp_policy": lp["logp_policy"], "logp_ref": lp["logp_ref"]}

    def exact_log_probs(self, oracle) -> torch.Tensor:
        return oracle.model_log_probs(self.model)
