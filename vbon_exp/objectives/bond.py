"""`objective=bond`: Best-of-N Distillation (BOND; Sessa et al. 2024, "BOND: Aligning LLMs with Best-of-N
Distillation", arXiv:2407.14622, ICLR 2025): move π_θ towards π_BoN(N) by minimising the Jeffreys divergence

    J_w(π_θ) = (1 − w)·KL(π_BoN ‖ π_θ) + w·KL(π_θ ‖ π_BoN),      w = objective.jeffreys_weight ∈ [0, 1].

- Backward term, KL(π_θ ‖ π_BoN) (mode seeking): vBoN's policy gradient, RL with the reward log F̂_x(r(y)) from the
  train prompts' reference cache and KL coefficient β = 1/(N − 1) (Amini et al. 2025, §3, the l1 bound; transform
  `log_cdf`). With the per-token KL penalty, its loss is β·KL(π_θ ‖ π_BoN) + const.
- Forward term, KL(π_BoN ‖ π_θ) (mode covering): the negative log-likelihood of best-of-N samples of π_ref, as
  BoN-SFT; each minibatch is matched by one BoN sample per rollout, of the same prompt, from a per-prompt set of
  `objective.forward_samples_per_prompt` BoN(N) samples drawn once per run (seeded by the run's seed and the prompt,
  so a resumed run draws the same set).

The trainer's loss is β·J_w: the clipped policy-gradient loss weighted w (`pg_coef`) plus (1 − w)·β times the
token-mean NLL (a loss term). Convention: w weights the *backward* term, so **w = 1 is vBoN (bound=l1) exactly**
(the same code path, no forward term) and w = 0 the forward KL alone. The BOND paper mixes both (J-BOND: 0.5), the
default here. The mix is exact for unwhitened advantages (algo.whiten_advantages=false, RLOO's default); PPO's
whitening rescales the policy-gradient term by 1/std(advantages) every batch, so there w is a relative weight."""

from __future__ import annotations

from typing import Callable

import torch

from vbon_exp.evaluation import BoNPolicy
from vbon_exp.modeling import Samples
from vbon_exp.objectives.base import RunContext, model_policy, register_objective
from vbon_exp.objectives.rl_objective import RLObjective
from vbon_exp.trainers.rollout import masked_mean
from vbon_exp.trainers.shared import derived_seed
from vbon_exp.settings.objective import BONDConfig


class PromptSampleSets:
    """Per-prompt sets of samples, drawn the first time a prompt is asked for and kept until `clear()`. Each set is
    drawn with its own generator, seeded by (seed, purpose, version, prompt), so its contents do not depend on when
    or with which other prompts it is drawn: a resumed run draws what an uninterrupted one did."""

    def __init__(self, ctx: RunContext, draw: Callable[[list[int], torch.Generator], Samples], purpose: str):
        self.ctx, self.draw, self.purpose = ctx, draw, purpose
        self.version = 0
        self.sets: dict[int, Samples] = {}

    def clear(self, version: int) -> None:
        self.sets, self.version = {}, version

    def get(self, prompt: int) -> Samples:
        if prompt not in self.sets:
            generator = torch.Generator(device=self.ctx.device).manual_seed(
                derived_seed(self.ctx.settings.seed, self.purpose, self.version, prompt))
            with torch.no_grad():
                samples = self.draw([self.ctx.task.train_prompts[prompt]], generator)
            samples.prompt_index = torch.full_like(samples.prompt_index, prompt)
            self.sets[prompt] = samples
        return self.sets[prompt]


class ForwardKLTerm:
    """The forward-KL loss term coef·E[−log π_θ(y|x)]/|y| over samples y of the target distribution: one target
    sample per minibatch row, of the row's prompt, picked with a generator seeded by (seed, update, call, rank)."""

    def __init__(self, coef: float, sets: PromptSampleSets):
        self.coef, self.sets = float(coef), sets
        self._update, self._calls = None, 0

    def __call__(self, trainer, mb, stats) -> tuple[torch.Tensor, dict]:
        if trainer.step != self._update:
            self._update, self._calls = trainer.step, 0
        g = torch.Generator().manual_seed(derived_seed(trainer.seed, "forward-kl-pick", trainer.step, self._calls,
                                                       trainer.rank))
        self._calls += 1
        parts = []
        prompts, counts = torch.unique(mb.samples.prompt_index.cpu(), return_counts=True)
        for prompt, count in zip(prompts.tolist(), counts.tolist()):
            pool = self.sets.get(int(prompt))
            picks = torch.randint(len(pool), (count,), generator=g)
            parts.append(pool.select(picks.to(pool.prompt_index.device)))
        batch = Samples.cat(parts, trainer.task.pad_id).to(trainer.accelerator.device)
        stats, _ = trainer.model(batch, trainer.sampling.temperature, chunk=trainer.chunk)
        nll = -masked_mean(stats.logp, batch.response_mask.float())
        return self.coef * nll, {"forward_nll": nll.detach()}


def reference_bon_sets(ctx: RunContext, n: int, per_prompt: int, purpose: str) -> PromptSampleSets:
    """`per_prompt` BoN(n) samples of π_ref for each train prompt, drawn when the prompt is first met."""
    reference = model_policy(ctx, ctx.task.reference)
    bon_policy = BoNPolicy(reference, n)
    return PromptSampleSets(ctx, lambda prompts, g: bon_policy.sample(prompts, per_prompt, g), purpose)


@register_objective
class BONDObjective(RLObjective):
    name = "bond"
    config = BONDConfig
    transform = "log_cdf"

    @property
    def weight(self) -> float:
        return float(self.cfg.jeffreys_weight)

    def loss_terms(self, ctx: RunContext) -> list:
        if self.weight == 1.0:
            return []  # vBoN itself
        sets = reference_bon_sets(ctx, int(self.n), int(self.cfg.forward_samples_per_prompt), "bond-bon-samples")
        return [ForwardKLTerm((1.0 - self.weight) * self.kl_coef(), sets)]

    def trainer_options(self, ctx: RunContext) -> dict:
        return {"pg_coef": self.weight}

    def fit(self, ctx: RunContext):
        policy = super().fit(ctx)
        ctx.extras["jeffreys_weight"] = self.weight
        return policy

    def bon_target_n(self) -> float:
        return float(self.n)

    def target_log_probs(self, oracle):
        return oracle.bon_log_probs(int(self.n))
