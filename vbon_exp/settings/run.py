"""The top-level settings (seed, device, threads, `paths:`) and RunSettings, the one typed object a validated run
is: every node as its dataclass, read by the run, every objective, the evaluation and the results line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

from vbon_exp.errors import ConfigError, check_number


@dataclass
class PathsConfig:
    """conf `paths:`: where things are written. Relative paths are relative to the directory you run from."""

    # Root of all run output (Hydra run dirs, sweeps, caches). Ignored by git.
    output_root: str = "outputs"
    # Reference caches and built artifacts (the synthetic task's model).
    cache_dir: str = "${paths.output_root}/cache"


@dataclass
class RunConfig:
    """The top-level scalars of conf/config.yaml."""

    # Random seed (integer): sampling, training and evaluation draws all derive from it.
    seed: int = 0
    # Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...
    device: str = "auto"
    # Torch's CPU threads: auto ($OMP_NUM_THREADS when set, else usable cores / the launcher's parallel jobs, never
    # more than the cores other processes leave idle; at least 1) or an integer ≥ 1 (vbon_exp/threads.py).
    threads: Union[int, str] = "auto"

    def check(self, prefix: str = "") -> None:
        check_number("seed", self.seed, integer=True)
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device must be auto, cpu or cuda[:i], got {self.device!r}")
        if self.threads != "auto":
            check_number("threads", self.threads, integer=True, minimum=1)


@dataclass
class RunSettings:
    """A validated run (vbon_exp.config.validate): the node names of conf/config.yaml, each its settings dataclass.
    Built once, read everywhere after; nothing reads the composed config again (and nothing writes to it)."""

    run: RunConfig
    task: Any  # vbon_exp.settings.task: TASK_SETTINGS[task.name]
    objective: Any  # vbon_exp.settings.objective: OBJECTIVE_SETTINGS[objective.name]
    algo: Any  # vbon_exp.settings.algo.RLConfig
    sft: Any  # vbon_exp.settings.train.SFTConfig
    preference: Any  # vbon_exp.settings.train.PreferenceTrainConfig
    sampling: Any  # vbon_exp.settings.sampling.SamplingConfig
    reference: Any  # vbon_exp.settings.reference.ReferenceConfig
    eval: Any  # vbon_exp.settings.eval.EvalConfig
    train: Any  # vbon_exp.settings.train.TrainConfig
    wandb: Any  # vbon_exp.settings.wandb.WandbConfig
    paths: PathsConfig
    model: Any = None  # vbon_exp.settings.model.ModelConfig on language-model tasks, else None
    reward: Any = None  # vbon_exp.settings.reward: REWARD_SETTINGS[reward.type] on language-model tasks, else None
    judges: dict = field(default_factory=dict)  # eval.judges: name -> reward settings

    @property
    def seed(self) -> int:
        return self.run.seed

    def select(self, key: str, default=None):
        """The value at a dotted key (`objective.beta`, `seed`), or `default` where a node or key is absent."""
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part, None) if value is not None else None
        return default if value is None else value

    def trainer(self):
        """The settings of the trainer node the objective reads (algo | sft | preference), or None."""
        kind = self.objective.trains_with
        return getattr(self, kind) if kind else None

    def as_dict(self) -> dict:
        """Every setting as plain values (wandb's run config; the run's own record)."""
        out = {name: _plain(getattr(self, name)) for name in ("task", "objective", "algo", "sft", "preference",
                                                               "sampling", "reference", "eval", "train", "wandb",
                                                               "paths", "model", "reward")}
        out.update(seed=self.run.seed, device=self.run.device, threads=self.run.threads)
        out["eval"]["judge_settings"] = {name: _plain(judge) for name, judge in self.judges.items()}
        return out


def _plain(node):
    return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node
