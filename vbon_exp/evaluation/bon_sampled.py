"""Best-of-N by sampling (`objective=bon objective.estimate=sample`, and BoN-SFT's and BOND's training samples): N
fresh reference samples per output, the highest reward kept (the first on ties). BoN has no token probabilities: its
KL is the k1 estimate, the mean of a per-sample estimate of log π_BoN/π_ref from the test cache, tie-aware
(pool_estimators.log_bon_ratio_from_counts: log((F̂^N − F̂⁻^N)/q̂) on a reward the cache holds, log N + (N−1)·log F̂
on one it does not), beside the analytic log N − (N−1)/N of continuous rewards."""

from __future__ import annotations

import torch

from vbon_exp import bon, pool_estimators
from vbon_exp.evaluation.model import ModelPolicy
from vbon_exp.evaluation.policy import EvalContext
from vbon_exp.evaluation.sampled import SampledPolicy
from vbon_exp.logprobs import sequence_log_probs
from vbon_exp.modeling import Samples


class BoNPolicy(SampledPolicy):
    """Best-of-N over the reference: N reference samples per output, the highest reward kept (first on ties)."""

    def __init__(self, reference: ModelPolicy, n: int):
        self.reference, self.n = reference, int(n)
        self.bootstrap_bon_n = self.n

    def sample(self, prompts: list[list[int]], n: int, generator, desc: str | None = None) -> Samples:
        pool = self.reference.sample(prompts, n * self.n, generator, desc=desc)
        groups = pool.rewards.view(len(prompts) * n, self.n)  # rows are grouped by prompt, in prompt order
        kept = groups.argmax(dim=-1)
        best = kept + torch.arange(groups.shape[0]) * self.n
        chosen = pool.select(best.to(pool.prompt_index.device))
        chosen.extras["bon_n"] = torch.full_like(kept, self.n).to(chosen.prompt_index.device)
        chosen.extras["bon_kept"] = kept.to(chosen.prompt_index.device)
        return chosen

    def at_temperature(self, temperature: float) -> BoNPolicy:
        """Best-of-N over π_ref at `temperature`: its N candidates are drawn at that temperature."""
        return BoNPolicy(self.reference.at_temperature(temperature), self.n)

    def kl_terms(self, samples: Samples, cache, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """k1: each sample's estimate of log π_BoN/π_ref from the reference cache's counts below and at its reward,
        tie-aware (pool_estimators.log_bon_ratio_from_counts; BoN has no token probabilities)."""
        prompts, rewards = samples.prompt_index.cpu().long(), samples.rewards.cpu()
        less = bon.count_less(cache.sorted_rewards, prompts, rewards)
        less_equal = bon.count_less_equal(cache.sorted_rewards, prompts, rewards)
        m = cache.lengths.index_select(0, prompts)
        return {"k1": pool_estimators.log_bon_ratio_from_counts(less, less_equal, m, self.n)}

    def measure(self, samples: Samples, ctx: EvalContext) -> dict:
        terms = self.kl_terms(samples, ctx.test_cache)
        ref = self.reference
        logp_ref = sequence_log_probs(ref.task.reference, samples.to(next(ref.task.reference.parameters()).device),
                                      ref.sampling.temperature, ctx.settings.batch_size).cpu()
        return {"kl": terms, "logp_policy": logp_ref + terms["k1"], "logp_ref": logp_ref}

    def analytic_kl(self) -> float:
        return bon.kl_bon_analytic(self.n) if self.n > 1 else 0.0

    def extra_metrics(self) -> dict:
        return {"kl_analytic": self.analytic_kl()}

    def exact_log_probs(self, oracle) -> torch.Tensor:
        return oracle.bon_log_probs(self.n)
