"""Objectives by name (conf/objective/<name>.yaml sets `name`)."""

from vbon_exp.objectives.base import Objective, RunContext
from vbon_exp.objectives.bon import BoNObjective

OBJECTIVES: dict[str, type[Objective]] = {"bon": BoNObjective}


def build_objective(cfg_objective) -> Objective:
    return OBJECTIVES[cfg_objective.name](**{k: v for k, v in cfg_objective.items()})


__all__ = ["OBJECTIVES", "Objective", "RunContext", "build_objective"]
