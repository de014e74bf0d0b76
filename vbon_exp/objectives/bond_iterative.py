"""`objective=bond_iterative`: iterative BOND with a moving anchor (Sessa et al. 2024, "BOND: Aligning LLMs with
Best-of-N Distillation", arXiv:2407.14622: iterative BOND, with J-BOND's choices as options).

Instead of distilling BoN(N) of π_ref at once, each round distils best-of-n (small n, `objective.round_n`, default 2)
of a moving anchor π_anchor: the same RL as `objective=bond` (backward term: reward log F̂_anchor(r(y)), KL
coefficient 1/(n − 1) against π_anchor; forward term, weight 1 − w: the likelihood of BoN_n(π_anchor) samples), with
the anchor in place of π_ref. F̂_anchor comes from `objective.anchor_samples` fresh anchor samples per prompt, drawn
when a prompt is first met after each anchor change (not from the static reference cache); every n consecutive of
them also give one BoN_n(π_anchor) sample for the forward term. For continuous rewards BoN_n of BoN_m is BoN_(n·m),
so after t rounds the policy aims at π_BoN(n^t) of π_ref: the run reaches the objective's N = n^R in R = log_n N
rounds (N is the shared β axis, N = 1/β + 1: it must be a power of n).

- `anchor=copy` (iterative BOND): the anchor is a frozen copy of π_θ, replaced at the end of each round; the run's
  updates are split into R equal rounds (or `anchor_every` updates each). Exact target after round t: π_BoN(n^t).
- `anchor=ema` (J-BOND): after every update, anchor ← γ·anchor + (1 − γ)·π_θ in parameter space (γ =
  `objective.ema`). No exact rounds: if π_θ tracked BoN_n(anchor) exactly and the parameter EMA acted as an EMA of
  log-densities, the anchor would gain (1 − γ) rounds per update, so the run's nominal round count is
  1 + (1 − γ)·updates and γ defaults to 1 − (R − 1)/updates (nominally N at the end). The exact KL to π_BoN(nominal N)
  is reported; it is an idealisation, not a theorem.
- `ref_kl` (J-BOND): an extra ref_kl·KL(π_θ ‖ π_ref) loss term (per-token, full vocabulary), which keeps the moving
  anchor from drifting; the exact target ignores it.

Logged per update: `round` and `effective_n` = n^round; in the results line the final ones, and on a task with an
oracle at the end of each round `exact_kl_to_target_round<t>` (KL(π_θ ‖ π_BoN(n^t))), its value at π_ref
(`exact_kl_to_target_init_round<t>`) and `exact_kl_to_anchor_bon_round<t>` (KL(π_θ ‖ BoN_n(π_anchor)), the target of
that round against the anchor's exact distribution)."""

from __future__ import annotations

import logging

import torch

from vbon_exp import bon
from vbon_exp.adapters import policy_weights
from vbon_exp.errors import ConfigError
from vbon_exp.objectives.base import RunContext, model_policy, register_objective
from vbon_exp.objectives.bond import ForwardKLTerm, PromptSampleSets
from vbon_exp.objectives.rl_objective import RLObjective
from vbon_exp.objectives.training import policy_half, trust_remote_code
from vbon_exp.trainers.rollout import masked_mean
from vbon_exp.trainers.trainable import load_trainable_weights
from vbon_exp.settings.objective import BONDIterativeConfig, rounds_for

log = logging.getLogger(__name__)


class RefKLTerm:
    """coef·KL(π_θ ‖ π_ref) per response token over the whole vocabulary (J-BOND's regulariser), from the KL the
    trainer's chunked log-prob pass computes when a term asks for it (`needs_reference_kl`)."""

    needs_reference_kl = True

    def __init__(self, coef: float):
        self.coef = float(coef)

    def __call__(self, trainer, mb, stats):
        value = masked_mean(stats.kl, mb.mask)
        return self.coef * value, {"ref_kl": value.detach()}


class MovingAnchor:
    """The anchor model, its round schedule, and the per-prompt sets of fresh anchor samples (F̂_anchor and the
    BoN_n(π_anchor) samples). `__call__` is the trainer's per-update callback."""

    def __init__(self, objective: "BONDIterativeObjective", ctx: RunContext):
        cfg = objective.cfg
        self.objective, self.ctx, self.cfg = objective, ctx, cfg
        self.n, self.rounds = int(cfg.round_n), rounds_for(cfg.n, cfg.round_n)
        # the policy's starting weights, as the trainer holds them (float32 unless pure half precision; with LoRA the
        # base the adapter starts from); refreshed from the policy's (merged) weights
        self.model = load_trainable_weights(ctx.task.policy_init, ctx.device, half=policy_half(ctx),
                                            trust_remote_code=trust_remote_code(ctx)).eval().requires_grad_(False)
        self.policy = model_policy(ctx, self.model)
        m = int(cfg.anchor_samples)
        self.samples = PromptSampleSets(ctx, lambda prompts, g: self.policy.sample(prompts, m, g), "anchor-samples")
        self.bon_sets = _BestOfGroups(self)
        self.trainer = self.num_updates = self.stop = None  # known once the trainer exists (`bind`)
        self.boundaries: list[int] = []
        self.gamma = 1.0
        self.records: dict[str, float] = {}

    # ---------------------------------------------------------------- the schedule
    def bind(self, trainer) -> None:
        self.trainer, self.num_updates = trainer, trainer.num_updates
        mu = trainer.train_cfg.max_updates
        self.stop = self.num_updates if mu is None else min(self.num_updates, mu)
        if self.cfg.anchor == "copy":
            every = self.cfg.anchor_every
            if every is None:
                if self.num_updates < self.rounds:
                    raise ConfigError(f"objective.n={self.cfg.n} needs {self.rounds} rounds of best-of-"
                                      f"{self.n}, but the run has only {self.num_updates} updates")
                self.boundaries = [round(r * self.num_updates / self.rounds) for r in range(1, self.rounds)]
            else:
                self.boundaries = list(range(every, self.num_updates, every))
                if len(self.boundaries) + 1 != self.rounds:
                    log.warning("objective.anchor_every=%d gives %d rounds over %d updates, not the %d that "
                                "objective.n=%s needs; the run aims at N = %d^%d", every, len(self.boundaries) + 1,
                                self.num_updates, self.rounds, self.cfg.n, self.n, len(self.boundaries) + 1)
        else:
            self.gamma = self.cfg.ema if self.cfg.ema is not None else 1.0 - (self.rounds - 1) / self.num_updates

    def fresh_samples(self) -> PromptSampleSets:
        """The anchor sample sets of the anchor the current update trains against (redrawn after each change; the
        version follows the trainer's update counter, so a resumed run draws what an uninterrupted one did)."""
        version = self.version(self.trainer.step)
        if version != self.samples.version:
            self.samples.clear(version)
        return self.samples

    def version(self, update: int) -> int:
        """Which anchor update `update` (0-based) trains against: the round index (copy) or the update (ema)."""
        if self.cfg.anchor == "copy":
            return sum(b <= update for b in self.boundaries)
        return update

    def round(self, updates_done: int) -> float:
        """The round of the policy after `updates_done` updates (1-based): copy, the round its last update belonged
        to; ema, the nominal 1 + (1 − γ)·updates."""
        if self.cfg.anchor == "copy":
            return 1 + sum(b < updates_done for b in self.boundaries)
        return round(1.0 + (1.0 - self.gamma) * updates_done, 9)  # (1 − γ)·U in floating point: 2.0000000000000018

    def effective_n(self, updates_done: int) -> float:
        return float(self.n ** self.round(updates_done))

    # ---------------------------------------------------------------- what the trainer reads
    def log_cdf_hat(self, prompt_index: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """log F̂_anchor(r(y)) = log((#{anchor rewards < r} + 1)/(M + 1)), the reference cache's rule."""
        prompt_index, rewards = prompt_index.cpu().long(), rewards.cpu()
        prompts = torch.unique(prompt_index)
        samples = self.fresh_samples()
        rows = [samples.get(int(p)).rewards.cpu().double() for p in prompts.tolist()]
        table, lengths = bon.pad_sorted_rewards(rows)
        local = torch.searchsorted(prompts, prompt_index)
        return bon.log_cdf_hat(table, lengths, local, rewards)

    @torch.no_grad()
    def __call__(self, trainer) -> dict:
        """After each update: the round's exact metrics at its end (oracle tasks), then the anchor's move."""
        done = trainer.step
        stats = {"round": float(self.round(done)), "effective_n": self.effective_n(done)}
        round_end = self.cfg.anchor == "copy" and done in self.boundaries
        if round_end or done == self.stop:
            stats.update(self.exact_round_metrics(trainer))
        if round_end:
            self.model.load_state_dict(policy_weights(trainer.unwrapped.lm))
        elif self.cfg.anchor == "ema":
            weights = policy_weights(trainer.unwrapped.lm)
            for name, a in self.model.named_parameters():
                a.mul_(self.gamma).add_(weights[name].detach().to(a.dtype), alpha=1.0 - self.gamma)
        return stats

    def exact_round_metrics(self, trainer) -> dict:
        """On a task with an oracle: KL(π_θ ‖ π_BoN(n^t)) (and at π_ref) and KL(π_θ ‖ BoN_n(π_anchor)), exact."""
        oracle = self.ctx.task.oracle
        if oracle is None or not self.ctx.accelerator.is_main_process:
            return {}
        t = self.round(trainer.step)
        target = oracle.bon_log_probs(self.effective_n(trainer.step))
        logp = oracle.model_log_probs(trainer.unwrapped.lm)
        anchor_bon = oracle.policy_bon_log_probs(oracle.model_log_probs(self.model), self.n)
        tag = f"round{t:g}" if self.cfg.anchor == "copy" else "final"
        out = {f"exact_kl_to_target_{tag}": float(bon.kl(logp, target).mean()),
               f"exact_kl_to_target_init_{tag}": float(bon.kl(oracle.ref_log_probs, target).mean()),
               f"exact_kl_to_anchor_bon_{tag}": float(bon.kl(logp, anchor_bon).mean())}
        self.records.update(out)
        log.info("iterative BOND, %s (N = %g): exact KL to π_BoN %.4g (π_ref: %.4g), to BoN_%d(anchor) %.4g", tag,
                 self.effective_n(trainer.step), out[f"exact_kl_to_target_{tag}"],
                 out[f"exact_kl_to_target_init_{tag}"], self.n, out[f"exact_kl_to_anchor_bon_{tag}"])
        return out


class _BestOfGroups:
    """BoN_n(π_anchor) samples of a prompt: the best of each n consecutive fresh anchor samples (first on ties)."""

    def __init__(self, anchor: MovingAnchor):
        self.anchor, self.n = anchor, anchor.n
        self.cache: dict[tuple[int, int], object] = {}

    def get(self, prompt: int):
        samples = self.anchor.fresh_samples()
        key = (samples.version, prompt)
        if key not in self.cache:
            self.cache = {k: v for k, v in self.cache.items() if k[0] == samples.version}
            pool = samples.get(prompt)
            groups = len(pool) // self.n
            rewards = pool.rewards[: groups * self.n].view(groups, self.n)
            best = rewards.argmax(-1) + torch.arange(groups, device=rewards.device) * self.n
            self.cache[key] = pool.select(best.to(pool.prompt_index.device))
        return self.cache[key]


@register_objective
class BONDIterativeObjective(RLObjective):
    name = "bond_iterative"
    config = BONDIterativeConfig
    transform = "log_cdf"

    def anchor(self, ctx: RunContext) -> MovingAnchor:
        if getattr(self, "_anchor", None) is None:
            self._anchor = MovingAnchor(self, ctx)
        return self._anchor

    def kl_coef(self) -> float:
        return 1.0 / (int(self.cfg.round_n) - 1)

    def sequence_reward(self, ctx: RunContext):
        anchor = self.anchor(ctx)

        def reward(samples, logp_anchor_seq):
            log_f = anchor.log_cdf_hat(samples.prompt_index, samples.rewards)
            return bon.REWARD_TRANSFORMS[self.transform](
                bon.TransformInputs(samples.rewards, log_f, logp_anchor_seq, self.cfg.round_n))

        return reward

    def loss_terms(self, ctx: RunContext) -> list:
        terms = []
        w = float(self.cfg.jeffreys_weight)
        if w < 1.0:
            terms.append(ForwardKLTerm((1.0 - w) * self.kl_coef(), self.anchor(ctx).bon_sets))
        if self.cfg.ref_kl > 0:
            terms.append(RefKLTerm(self.cfg.ref_kl))
        return terms

    def trainer_options(self, ctx: RunContext) -> dict:
        anchor = self.anchor(ctx)
        return {"pg_coef": float(self.cfg.jeffreys_weight), "reference": anchor.model, "update_callbacks": [anchor],
                "state_modules": {"anchor": anchor.model}}

    def prepare(self, ctx: RunContext, trainer) -> None:
        self.anchor(ctx).bind(trainer)  # the round schedule needs the trainer's update count

    def fit(self, ctx: RunContext):
        policy = super().fit(ctx)
        anchor = self.anchor(ctx)
        ctx.extras.update(round=anchor.round(anchor.stop), effective_n=anchor.effective_n(anchor.stop),
                          round_n=anchor.n, anchor=self.cfg.anchor, jeffreys_weight=float(self.cfg.jeffreys_weight),
                          **anchor.records)
        self.final_effective_n = anchor.effective_n(anchor.stop)
        return policy

    def bon_target_n(self) -> float:
        """π_BoN at the effective N = n^rounds reached (the planned N before training)."""
        n = getattr(self, "final_effective_n", None)
        return float(self.n) if n is None else float(n)

    def target_log_probs(self, oracle):
        n = getattr(self, "final_effective_n", None)
        return oracle.bon_log_probs(float(self.n) if n is None else n)
