"""`python -m vbon_exp [overrides]`: one run (or a sweep with -m) of the experiment in conf/config.yaml."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from vbon_exp import config as _config  # noqa: F401  (registers the n_from_beta / beta_from_n resolvers)
from vbon_exp.config import ConfigError
from vbon_exp.modeling import ModelLoadError
from vbon_exp.rewards import RewardError

log = logging.getLogger("vbon_exp")

# Errors a user can fix from the message alone: shown without a traceback.
USER_ERRORS = (ConfigError, ModelLoadError, RewardError, FileNotFoundError)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from vbon_exp.run import run  # heavy imports after Hydra has parsed the command line (fast --help)

    try:
        point = run(cfg)
    except USER_ERRORS as err:
        print(f"vbon_exp: error: {err}", file=sys.stderr)
        sys.exit(2)
    return point.get("reward")  # the metric a sweeper optimises; None on non-main processes


if __name__ == "__main__":
    main()
