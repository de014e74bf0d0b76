"""`plan=true`: what a run holds per GPU and how long it takes, from config files and the bench's rates, before
anything loads: the estimates (estimate.py) and the plan of a composed config (report.py)."""

from vbon_exp.plan.estimate import Shape, Step, bench_rates, hours, memory, read_config, shape_of
from vbon_exp.plan.report import plan_for, plan_from_hydra

__all__ = ["Shape", "Step", "bench_rates", "hours", "memory", "plan_for", "plan_from_hydra", "read_config",
           "shape_of"]
