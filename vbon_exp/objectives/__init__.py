"""Objectives by name (conf/objective/<name>.yaml sets `name`).

Every module of this package that defines an objective registers it with `@register_objective`; importing the
package imports them all, so a new objective is one module here plus one YAML (and its tests): no list to edit."""

import importlib
import pkgutil

from vbon_exp.objectives.base import OBJECTIVES, Objective, ObjectiveConfig, RunContext, register_objective

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_objective(objective_cfg) -> Objective:
    """The objective of a validated `objective` node (its config dataclass)."""
    return OBJECTIVES[objective_cfg.name](objective_cfg)


__all__ = ["OBJECTIVES", "Objective", "ObjectiveConfig", "RunContext", "build_objective", "register_objective"]
