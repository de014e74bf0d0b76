"""Tasks: prompts, the reference policy, the reward model and (for the synthetic task) exact oracles.

Each task module has a `build(cfg, ...) -> Task` named by `_target_` in conf/task/<name>.yaml."""

from vbon_exp.tasks.base import Task, build_task

__all__ = ["Task", "build_task"]
