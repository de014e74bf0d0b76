"""Objectives by name (conf/objective/<name>.yaml sets `name`)."""

from vbon_exp.objectives.base import Objective, RunContext
from vbon_exp.objectives.bon import BoNObjective
from vbon_exp.objectives.bon_sft import BoNSFTObjective
from vbon_exp.objectives.kl_rl import KLRLObjective
from vbon_exp.objectives.vbon import VBoNObjective

OBJECTIVES: dict[str, type[Objective]] = {
    "bon": BoNObjective,
    "vbon": VBoNObjective,
    "kl_rl": KLRLObjective,
    "bon_sft": BoNSFTObjective,
}


def build_objective(cfg_objective) -> Objective:
    from omegaconf import OmegaConf

    return OBJECTIVES[cfg_objective.name](**OmegaConf.to_container(cfg_objective, resolve=True))


__all__ = ["OBJECTIVES", "Objective", "RunContext", "build_objective"]
