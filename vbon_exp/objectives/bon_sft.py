"""`objective=bon_sft`: fine-tune on best-of-N samples. For each training prompt draw N responses from π_ref, keep
the highest-reward one, and maximise its likelihood (cross-entropy on response tokens only). As the number of BoN
samples grows, the maximum-likelihood policy tends to π_BoN."""

from __future__ import annotations

from omegaconf import OmegaConf

from vbon_exp.modeling import load_causal_lm
from vbon_exp.objectives.base import Objective, RunContext
from vbon_exp.objectives.rl import save_policy
from vbon_exp.policies import BoNPolicy, ModelPolicy
from vbon_exp.trainers.rl import TrainConfig, derived_seed
from vbon_exp.trainers.sft import SFTConfig, SFTTrainer


class BoNSFTObjective(Objective):
    name = "bon_sft"

    def __init__(self, beta, n, samples_per_prompt: int = 1, sft: dict | None = None, **_):
        super().__init__(beta, n)
        self.samples_per_prompt = int(samples_per_prompt)
        self.sft = dict(sft or {})

    def bon_data(self, ctx: RunContext):
        """`samples_per_prompt` BoN(N) responses for every training prompt (this process's share)."""
        import torch

        reference = ModelPolicy(ctx.task.reference, ctx.task, ctx.sampling, ctx.cfg.eval.score_batch_size)
        bon_policy = BoNPolicy(reference, int(round(float(self.n))))
        rank, world = ctx.accelerator.process_index, ctx.accelerator.num_processes
        prompts = ctx.task.train_prompts
        mine = list(range(rank, len(prompts), world))
        generator = torch.Generator(device=ctx.device).manual_seed(derived_seed(ctx.cfg.seed, "bon-sft-data", rank))
        data = bon_policy.sample([prompts[i] for i in mine], self.samples_per_prompt, generator,
                                 desc="BoN samples for SFT")
        data.prompt_index = torch.tensor(mine, device=data.prompt_index.device).repeat_interleave(
            self.samples_per_prompt)
        return data

    def fit(self, ctx: RunContext) -> ModelPolicy:
        sft = SFTConfig.from_dict(self.sft)
        train = TrainConfig(**OmegaConf.to_container(ctx.cfg.train, resolve=True))
        policy = load_causal_lm(ctx.task.policy_init, ctx.device)
        trainer = SFTTrainer(sft, train, policy=policy, data=self.bon_data(ctx), temperature=ctx.sampling.temperature,
                             accelerator=ctx.accelerator, run_dir=ctx.run_dir, tracker=ctx.tracker, seed=ctx.cfg.seed)
        lm = trainer.train()
        ctx.extras["param_checksums"] = trainer.checksums
        save_policy(ctx, lm)
        return ModelPolicy(lm, ctx.task, ctx.sampling, ctx.cfg.eval.score_batch_size)

    def target_log_probs(self, oracle):
        return oracle.bon_log_probs(int(round(float(self.n))))
