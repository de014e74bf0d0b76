"""`objective=bon_sft`: fine-tune on best-of-N samples. For each training prompt draw N responses from π_ref, keep
the highest-reward one, and maximise its likelihood (cross-entropy on response tokens only). As the number of BoN
samples grows, the maximum-likelihood policy tends to π_BoN."""

from __future__ import annotations



from vbon_exp.evaluation import BoNPolicy, ModelPolicy
from vbon_exp.objectives.base import Objective, RunContext, model_policy, register_objective
from vbon_exp.objectives.training import record_training, save_policy, train_config, trainable_policy
from vbon_exp.trainers.sft import SFTTrainer
from vbon_exp.trainers.shared import derived_seed
from vbon_exp.settings.objective import BoNSFTConfig


@register_objective
class BoNSFTObjective(Objective):
    name = "bon_sft"
    config = BoNSFTConfig

    def bon_data(self, ctx: RunContext):
        """`sft.samples_per_prompt` BoN(N) responses for every training prompt (this process's share)."""
        import torch

        per_prompt = int(ctx.settings.sft.samples_per_prompt)
        reference = model_policy(ctx, ctx.task.reference)
        bon_policy = BoNPolicy(reference, int(round(float(self.n))))
        rank, world = ctx.accelerator.process_index, ctx.accelerator.num_processes
        prompts = ctx.task.train_prompts
        mine = list(range(rank, len(prompts), world))
        generator = torch.Generator(device=ctx.device).manual_seed(derived_seed(ctx.settings.seed, "bon-sft-data", rank))
        data = bon_policy.sample([prompts[i] for i in mine], per_prompt, generator,
                                 desc="BoN samples for SFT")
        data.prompt_index = torch.tensor(mine, device=data.prompt_index.device).repeat_interleave(
            per_prompt)
        return data

    def fit(self, ctx: RunContext) -> ModelPolicy:
        sft, train = ctx.settings.sft, train_config(ctx)
        policy = trainable_policy(ctx, sft.trainable_layers)
        trainer = SFTTrainer(sft, train, policy=policy, data=self.bon_data(ctx), temperature=ctx.sampling.temperature,
                             accelerator=ctx.accelerator, run_dir=ctx.run_dir, tracker=ctx.tracker, seed=ctx.settings.seed)
        lm = trainer.train()
        record_training(ctx, trainer)
        save_policy(ctx, lm)
        return model_policy(ctx, lm)

    def bon_target_n(self) -> float:
        return float(self.n)

    def target_log_probs(self, oracle):
        return oracle.bon_log_probs(int(round(float(self.n))))
