"""`objective=external`: a policy trained anywhere — with TRL, OpenRLHF, by hand, or found on the hub — put on the same
frontier as the objectives trained here: the same test prompts, reference caches, evaluation, results columns and
samples file. Nothing is trained. `objective.policy` is a directory in save_pretrained layout (config, weights,
tokenizer) or a hub id; the policy must use the task's tokenizer (a policy whose tokens mean other things would be
measured against the wrong π_ref): one whose tokenizer differs is refused, with one line, before any cache is
built. Its results line carries `policy` (where it came from) and its legend label (`objective.label`, by default
the policy's name)."""

from __future__ import annotations

import logging


from vbon_exp.errors import ConfigError
from vbon_exp.evaluation import ModelPolicy
from vbon_exp.modeling import load_causal_lm, load_tokenizer
from vbon_exp.objectives.base import Objective, RunContext, model_policy, register_objective
from vbon_exp.settings.objective import ExternalConfig

log = logging.getLogger(__name__)


def tokenizers_differ(policy_tokenizer, task_tokenizer) -> str | None:
    """Why two tokenizers differ (vocabulary or EOS), or None when they are the same."""
    ours, theirs = task_tokenizer.get_vocab(), policy_tokenizer.get_vocab()
    if ours != theirs:
        extra = sorted(set(theirs) - set(ours), key=str)[:3]
        return (f"its vocabulary has {len(theirs)} tokens against the task's {len(ours)}"
                + (f" (e.g. {extra} are not the task's)" if extra else " (the same tokens, other ids)"))
    if policy_tokenizer.eos_token_id != task_tokenizer.eos_token_id:
        return f"its EOS is token {policy_tokenizer.eos_token_id}, the task's {task_tokenizer.eos_token_id}"
    return None


@register_objective
class ExternalObjective(Objective):
    name = "external"
    config = ExternalConfig

    def check_task(self, task) -> None:
        """The policy's tokenizer must be the task's: refused, naming the key, before any cache is built."""
        cfg = self.cfg
        try:
            tokenizer = load_tokenizer(cfg.policy, cfg.trust_remote_code, key="objective.policy")
        except Exception as err:  # no tokenizer files: the vocabulary size is all there is to compare
            log.warning("objective.policy=%s has no loadable tokenizer (%s): checking its vocabulary size only",
                        cfg.policy, type(err).__name__)
            return
        why = tokenizers_differ(tokenizer, task.tokenizer)
        if why:
            raise ConfigError(f"objective.policy={cfg.policy} does not use the task's tokenizer: {why}; evaluate it on "
                              "a task whose model has its tokenizer")

    def fit(self, ctx: RunContext) -> ModelPolicy:
        import torch

        cfg = self.cfg
        model = load_causal_lm(cfg.policy, ctx.device, cfg.trust_remote_code,
                               dtype=getattr(torch, cfg.dtype) if cfg.dtype else None, key="objective.policy")
        reference_vocab = getattr(ctx.task.reference.config, "vocab_size", None)
        if reference_vocab is not None and model.config.vocab_size != reference_vocab:
            raise ConfigError(f"objective.policy={cfg.policy} has a vocabulary of {model.config.vocab_size} tokens, "
                              f"the task's model {reference_vocab}: it does not use the task's tokenizer")
        ctx.extras["policy"] = cfg.policy
        log.info("evaluating the external policy %s (%s)", cfg.policy, cfg.legend())
        return model_policy(ctx, model.eval().requires_grad_(False))

    def target_log_probs(self, oracle):
        return None  # trained elsewhere, towards whatever it was trained for
