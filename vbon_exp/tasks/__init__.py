"""Tasks: prompts, the reference policy, the reward model and (for the synthetic task) exact oracles.

`TASKS` maps `task.name` to the task's settings (vbon_exp/settings/task.py: the schema of conf/task/<name>.yaml, with
its defaults) and its `build(cfg, *, device, cache_dir, temperature, max_new_tokens, model, reward) -> Task`. A new
task is one module here, its settings, one entry below and one YAML."""

from dataclasses import dataclass
from typing import Callable

from vbon_exp.tasks import imdb, synthetic, tldr
from vbon_exp.tasks.base import Task


@dataclass(frozen=True)
class TaskKind:
    config: type  # schema and defaults of conf/task/<name>.yaml
    build: Callable[..., Task]


TASKS: dict[str, TaskKind] = {
    "synthetic": TaskKind(synthetic.SyntheticTaskConfig, synthetic.build),
    "imdb": TaskKind(imdb.ImdbTaskConfig, imdb.build),
    "tldr": TaskKind(tldr.TldrTaskConfig, tldr.build),
}

def build_task(task_cfg, *, device, cache_dir: str, sampling, model=None, reward=None) -> Task:
    """The task of a validated run: `task_cfg` is the task's config dataclass, `model` and `reward` the
    language-model tasks' config dataclasses. The sampling temperature defines π_ref (the synthetic oracle enumerates
    at it), so it is the run's `sampling.temperature`, not the task's default."""
    return TASKS[task_cfg.name].build(task_cfg, device=device, cache_dir=cache_dir, temperature=sampling.temperature,
                                      max_new_tokens=sampling.max_new_tokens, model=model, reward=reward)


__all__ = ["TASKS", "Task", "TaskKind", "build_task"]
