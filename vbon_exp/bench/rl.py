"""Section 2: one RLOO update of vbon_exp's RLOOTrainer against one of TRL's RLOOTrainer (CPU: `pip install -e
'.[bench]'`), on the same tiny policy and reference, prompts and reward (a fixed random table averaged over the
completion's tokens), batch/k prompts × k completions per step, float32, one optimisation pass per step, no vLLM.
Section 3: one PPO update of vbon_exp's PPOTrainer on the `--size` model in `--dtype` on `--device`: rollout
(sampling, the table reward, policy / value / reference log-probs), GAE, then ppo_epochs × num_minibatches optimizer
steps; `ppo_episodes_per_s` = batch / step time. Each side: `--rl-steps` timed steps after one warm-up step."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from vbon_exp.bench.scale import Scale, gpu_peak_gb, random_gpt2, random_prompts, reset_gpu_peak, synchronize
from vbon_exp.bench.timing import spread


def table_reward_values(scale: Scale, seed: int = 123):
    import torch

    return torch.randn(scale.vocab, generator=torch.Generator().manual_seed(seed))


class TableReward:
    """A cheap deterministic reward: the mean of a fixed random table over the response's tokens."""

    name = "bench-table"
    fingerprint = "bench-table:123"

    def __init__(self, scale: Scale):
        self.table = table_reward_values(scale)

    def __call__(self, samples):
        mask = samples.response_mask.float().cpu()
        vals = self.table[samples.response_ids.cpu()] * mask
        return vals.sum(-1) / mask.sum(-1).clamp(min=1.0)


class BenchTask:
    """What the RL trainer reads from a task."""

    def __init__(self, scale: Scale, reference, prompts):
        self.reference = reference.requires_grad_(False)
        self.train_prompts = prompts
        self.reward = TableReward(scale)
        self.eos_id = self.pad_id = scale.vocab - 1


def rl_trainer(scale: Scale, cfg, steps: int, size: str, device: str, dtype: str, run_dir: Path, train=None):
    """vbon_exp's trainer for `cfg` (RLConfig) on a random `size` policy in `dtype`, a frozen copy of it as the
    reference, and enough prompts for steps + 1 updates."""
    import copy

    from accelerate import Accelerator

    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers import ALGOS, TrainConfig

    policy = random_gpt2(scale, size, device=device, dtype=dtype)
    per_prompt = cfg.rloo_k if cfg.name == "rloo" else 1
    task = BenchTask(scale, copy.deepcopy(policy), random_prompts(
        scale, cfg.batch_size // per_prompt * (steps + 1), scale.prompt_len, seed=2))
    sampling = SamplingConfig(temperature=scale.temperature, max_new_tokens=scale.new_tokens, batch_size=scale.batch)
    return ALGOS[cfg.name](cfg, train or TrainConfig(checkpoint_every=0), policy=policy, task=task, sampling=sampling,
                           sequence_reward=lambda samples, logp_ref: samples.rewards.double(), kl_coef=scale.beta,
                           accelerator=Accelerator(cpu=device == "cpu"), run_dir=run_dir, seed=0)


def update_times(trainer, steps: int, device: str) -> list[float]:
    """Seconds of each of `steps` updates after one warm-up update: the work of one iteration of
    OnPolicyTrainer.train (rollout, advantages, ppo_epochs × num_minibatches optimizer steps)."""
    times = []
    for update in range(steps + 1):
        synchronize(device)
        t0 = time.perf_counter()
        ro = trainer.rollout(update)
        trainer.compute_advantages(ro)
        trainer.optimise(ro, update)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times[1:]


def rl_step_times(scale: Scale, cfg, steps: int, size: str = "tiny", device: str = "cpu",
                  dtype: str = "float32") -> tuple[list[float], float]:
    """Seconds of each of `steps` updates, and the optimizer steps an update took (counted by the trainer's
    scheduler, which steps once per optimizer step)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = rl_trainer(scale, cfg, steps, size, device, dtype, Path(tmp))
        times = update_times(trainer, steps, device)
    return times, trainer.scheduler.last_epoch / (steps + 1)


def rloo_config(scale: Scale, steps: int):
    from vbon_exp.trainers import RLConfig

    return RLConfig(name="rloo", lr=scale.lr, batch_size=scale.batch, num_minibatches=1, ppo_epochs=1,
                    rloo_k=scale.rloo_k, total_episodes=scale.batch * (steps + 1), whiten_advantages=False,
                    schedule="constant")


def ours_rloo_step_times(scale: Scale, steps: int) -> list[float]:
    return rl_step_times(scale, rloo_config(scale, steps), steps)[0]


def word_tokenizer(scale: Scale):
    """A whitespace word-level tokenizer over the vocabulary's tokens "t0" … (the last one is EOS and pad), so TRL
    gets text prompts whose ids are exactly ours."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    last = f"t{scale.vocab - 1}"
    tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(scale.vocab)}, unk_token=last))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=last, pad_token=last, unk_token=last)
    fast.padding_side = "left"
    return fast


def trl_rloo_step_times(scale: Scale, steps: int) -> list[float]:
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    tokenizer = word_tokenizer(scale)
    prompts = random_prompts(scale, scale.batch // scale.rloo_k * (steps + 1), scale.prompt_len, seed=2)
    texts = [" ".join(f"t{i}" for i in p) for p in prompts]
    assert tokenizer(texts[0])["input_ids"] == prompts[0]
    table = table_reward_values(scale)

    def table_reward(prompts, completions, completion_ids, **kwargs):  # the same function as TableReward
        return [float(table[torch.tensor(ids)].mean()) if ids else 0.0 for ids in completion_ids]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        # TRL loads its reference model from the policy's path: give it the saved tiny policy (float32)
        random_gpt2(scale, "tiny").save_pretrained(Path(tmp) / "policy")
        args = trl.RLOOConfig(
            output_dir=tmp, per_device_train_batch_size=scale.batch, gradient_accumulation_steps=1,
            steps_per_generation=1, num_generations=scale.rloo_k, num_iterations=1,
            max_completion_length=scale.new_tokens, temperature=scale.temperature, top_k=0, top_p=1.0,
            beta=scale.beta, learning_rate=scale.lr, lr_scheduler_type="constant", max_steps=steps + 1,
            use_vllm=False, bf16=False, fp16=False, use_cpu=True, report_to="none", save_strategy="no",
            logging_steps=1, seed=0, dataloader_num_workers=0, disable_dropout=True, shuffle_dataset=False,
            model_init_kwargs={"dtype": torch.float32},
        )
        trainer = trl.RLOOTrainer(model=str(Path(tmp) / "policy"), reward_funcs=table_reward, args=args,
                                  train_dataset=Dataset.from_dict({"prompt": texts}), processing_class=tokenizer,
                                  callbacks=[timer])
        trainer.train()
    return timer.times[1:]


def bench_rloo(scale: Scale, steps: int, skip_trl: bool) -> dict:
    import sys

    ours = ours_rloo_step_times(scale, steps)
    out = {"step_s_ours": spread(ours)["median"], "step_s_ours_best": spread(ours)["min"], "step_times_s_ours": ours}
    if skip_trl:
        return out
    try:
        import trl  # noqa: F401
    except ImportError:
        print("TRL is not installed (pip install -e '.[bench]'): skipping the TRL step", file=sys.stderr)
        return out
    theirs = trl_rloo_step_times(scale, steps)
    out.update(step_s_trl=spread(theirs)["median"], step_s_trl_best=spread(theirs)["min"], step_times_s_trl=theirs,
               step_time_ratio_vs_trl=out["step_s_ours"] / spread(theirs)["median"],
               step_time_ratio_vs_trl_best=out["step_s_ours_best"] / spread(theirs)["min"])
    return out


def ppo_config(steps: int, batch: int, epochs: int, minibatches: int, micro_batch_size: int | None, lr: float):
    from vbon_exp.trainers import RLConfig

    cfg = RLConfig(name="ppo", lr=lr, batch_size=batch, ppo_epochs=epochs, num_minibatches=minibatches,
                   micro_batch_size=micro_batch_size, total_episodes=batch * (steps + 1), schedule="constant")
    cfg.check()
    return cfg


def bench_ppo(scale: Scale, steps: int, size: str, device: str, dtype: str, **ppo) -> dict:
    """One PPO update's seconds (min and median over `steps`) and what they give for GPU-hour estimates: episodes/s
    at the median."""
    cfg = ppo_config(steps, lr=scale.lr, **ppo)
    reset_gpu_peak(device)
    times, optimizer_steps = rl_step_times(scale, cfg, steps, size, device, dtype)
    step = spread(times)
    out = {"ppo_step_s": step["median"], "ppo_step_s_best": step["min"], "ppo_step_times_s": times,
           "ppo_episodes_per_s": cfg.batch_size / step["median"], "ppo_optimizer_steps": optimizer_steps}
    out.update({f"ppo_{k}": v for k, v in gpu_peak_gb(device).items()})
    return out
