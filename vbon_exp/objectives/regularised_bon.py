"""`objective=regularised_bon`: regularised best-of-N, the KL-regularised form of Jinnai, Morimura, Ariu & Abe 2024
(*Regularized Best-of-N Sampling to Mitigate Reward Hacking for Language Model Alignment*, arXiv:2404.01054): draw N
samples from π_ref and keep the one with the largest r(y) + λ·log π_ref(y|x). The log-probability term pulls the choice
towards responses π_ref finds likely, against reward hacking. λ = 0 is BoN. Nothing is trained.

Exact distribution: BoN on the score s(y) = r(y) + λ·log π_ref(y|x) — π(y) = π_BoN(N) with s in place of r
(vbon_exp.bon.bon_log_probs, ties included): on the synthetic task from the oracle's exact π_ref.

Evaluation by sampling (the BoN pool holds rewards only, not π_ref's log-probabilities): N·eval.samples_per_prompt
fresh π_ref candidates per test prompt, their log π_ref from a forward pass of the reference, the best score kept.
Reward and win rate are unbiased (fresh samples). Its KL to π_ref is BoN's on the score: the k1 estimate
log N + (N−1)·log Ĝ(s(y)), Ĝ the score's CDF estimated from the prompt's own candidates ((rank + 1)/(M + 1) over
its M = N·samples_per_prompt candidates, as F̂ for BoN): a plug-in."""

from __future__ import annotations

import math

import torch

from vbon_exp import bon
from vbon_exp.evaluation import ModelPolicy, SampledPolicy
from vbon_exp.logprobs import sequence_log_probs
from vbon_exp.modeling import Samples
from vbon_exp.objectives.base import Objective, RunContext, model_policy, register_objective
from vbon_exp.settings.objective import RegularisedBoNConfig


def regularised_bon_log_probs(logp_ref: torch.Tensor, rewards: torch.Tensor, n: float, lam: float) -> torch.Tensor:
    """Exact log π(y) over an enumerated support [..., K]: BoN on r + λ·log π_ref."""
    logp = logp_ref.to(torch.float64)
    return bon.bon_log_probs(logp, rewards.to(torch.float64) + lam * logp, n)


class RegularisedBoN(SampledPolicy):
    """Regularised BoN over the reference: N candidates per output, the largest r + λ·log π_ref kept."""

    def __init__(self, reference: ModelPolicy, n: int, lam: float, batch_size: int = 64):
        self.reference, self.n, self.lam, self.batch_size = reference, int(n), float(lam), batch_size

    def sample(self, prompts: list[list[int]], n: int, generator, desc: str | None = None) -> Samples:
        ref = self.reference
        pool = ref.sample(prompts, n * self.n, generator, desc=desc)
        device = next(ref.task.reference.parameters()).device
        logp = sequence_log_probs(ref.task.reference, pool.to(device), ref.sampling.temperature,
                                  self.batch_size).cpu()
        score = (pool.rewards.cpu().double() + self.lam * logp).view(len(prompts), n * self.n)
        # Ĝ(s) = (#{candidates of the prompt with a lower score} + 1)/(M + 1): the score's CDF estimate
        below = torch.searchsorted(score.sort(dim=-1).values, score.contiguous(), side="left").double()
        log_g = torch.log((below + 1.0) / (score.shape[1] + 1.0)).view(-1)
        groups = score.view(len(prompts) * n, self.n)
        kept = groups.argmax(dim=-1)
        best = kept + torch.arange(groups.shape[0]) * self.n
        chosen = pool.select(best.to(pool.prompt_index.device))
        target = chosen.prompt_index.device
        chosen.extras.update(bon_n=torch.full_like(kept, self.n).to(target), bon_kept=kept.to(target),
                             logp_ref=logp[best].to(target),
                             log_ratio=(math.log(self.n) + (self.n - 1) * log_g[best]).to(target))
        return chosen

    def at_temperature(self, temperature: float) -> RegularisedBoN:
        return RegularisedBoN(self.reference.at_temperature(temperature), self.n, self.lam, self.batch_size)

    def measure(self, samples: Samples, ctx) -> dict:
        logp_ref = samples.extras["logp_ref"].cpu().double()
        log_ratio = samples.extras["log_ratio"].cpu().double()
        return {"kl": {"k1": log_ratio}, "logp_policy": logp_ref + log_ratio, "logp_ref": logp_ref}

    def extra_metrics(self) -> dict:
        return {"lam": self.lam}

    def exact_log_probs(self, oracle) -> torch.Tensor:
        return regularised_bon_log_probs(oracle.ref_log_probs, oracle.rewards, self.n, self.lam)


@register_objective
class RegularisedBoNObjective(Objective):
    name = "regularised_bon"
    config = RegularisedBoNConfig

    def fit(self, ctx: RunContext) -> RegularisedBoN:
        reference = model_policy(ctx, ctx.task.reference)
        return RegularisedBoN(reference, int(self.n), self.cfg.lam, ctx.settings.eval.batch_size)

    def target_log_probs(self, oracle):
        return None  # an inference-time method: no target to reach
