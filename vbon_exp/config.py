"""Config resolvers and start-up validation: bad input fails here, naming the key, before any model loads."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and what is allowed."""


def _n_from_beta(beta):
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        return None
    return 1.0 / beta + 1.0 if beta > 0 else None


def _beta_from_n(n):
    try:
        n = float(n)
    except (TypeError, ValueError):
        return None
    return 1.0 / (n - 1.0) if n > 1 else None


def _whole_if_close(n):
    """N = 1/β + 1 computed in floating point (1/(1/15) + 1 = 15.999…): the integer when within 1e-9 of one."""
    if n is not None and abs(n - round(n)) <= 1e-9 * max(1.0, abs(n)):
        return int(round(n))
    return n


def _n_from_beta_if_set(default, *, _parent_):
    """`${n_from_beta_if_set:4}` (bon, bon_sft): N = 1/β + 1 when the objective's `beta` was set to a value (a β
    sweep shared with vbon and kl_rl), else `default`. `beta` itself is `${beta_from_n:${.n}}`: whichever of the
    two the user sets, the other follows, with no cycle (this looks at `beta` only when it is not derived)."""
    if "beta" not in _parent_ or OmegaConf.is_interpolation(_parent_, "beta"):
        return default
    return _whole_if_close(_n_from_beta(_parent_.beta))


def register_resolvers() -> None:
    """`${n_from_beta:${.beta}}` and `${beta_from_n:${.n}}` tie N and β together (N = 1/β + 1) in objective
    configs: each objective sets one and derives the other; `${n_from_beta_if_set:4}` lets bon and bon_sft take
    either (N by default, β in sweeps)."""
    for name, fn in (("n_from_beta", _n_from_beta), ("beta_from_n", _beta_from_n),
                     ("n_from_beta_if_set", _n_from_beta_if_set)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def _get(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception as err:  # MissingMandatoryValue, InterpolationResolutionError, ...
        raise ConfigError(f"{key}: {err}") from None


def _number(cfg, key, *, integer=False, minimum=None, exclusive_min=None, maximum=None, allow_none=False):
    value = _get(cfg, key)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be ≥ {minimum}, got {value!r}")
    if exclusive_min is not None and value <= exclusive_min:
        raise ConfigError(f"{key} must be > {exclusive_min}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be ≤ {maximum}, got {value!r}")
    return value


def validate(cfg: DictConfig) -> None:
    """Check every value a run depends on; raise ConfigError naming the first bad key."""
    _number(cfg, "seed", integer=True)
    _number(cfg, "sampling.temperature", exclusive_min=0)
    _number(cfg, "sampling.top_k", integer=True, minimum=0)
    _number(cfg, "sampling.top_p", exclusive_min=0, maximum=1)
    _number(cfg, "sampling.max_new_tokens", integer=True, minimum=1)
    _number(cfg, "sampling.batch_size", integer=True, minimum=1)
    _number(cfg, "reference.m", integer=True, minimum=2)
    _number(cfg, "reference.chunk_prompts", integer=True, minimum=1)
    _number(cfg, "reference.keep_texts", integer=True, minimum=0)
    _number(cfg, "eval.samples_per_prompt", integer=True, minimum=1)
    _number(cfg, "eval.batch_size", integer=True, minimum=1)
    _validate_schema(cfg)
    _validate_objective(cfg)
    _validate_training(cfg)
    mode = _get(cfg, "wandb.mode")
    if mode not in (None, "online", "offline", "disabled"):
        raise ConfigError(f"wandb.mode must be online, offline, disabled or null (auto), got {mode!r}")
    if _get(cfg, "task.name") == "synthetic":
        # the oracle enumerates the temperature-scaled model; a top-k/top-p sampler draws from another distribution
        for key, neutral in (("sampling.top_k", 0), ("sampling.top_p", 1.0)):
            if _get(cfg, key) != neutral:
                raise ConfigError(f"{key}={_get(cfg, key)} is not supported on the synthetic task (its exact values "
                                  f"describe the unfiltered sampler); use {key}={neutral}")
        length = _get(cfg, "task.response_length")
        if _get(cfg, "sampling.max_new_tokens") != length:
            raise ConfigError(
                f"sampling.max_new_tokens must equal task.response_length={length} on the synthetic task "
                "(responses have a fixed length and no EOS)"
            )


def _validate_objective(cfg: DictConfig) -> None:
    from vbon_exp.objectives import OBJECTIVES

    name = _get(cfg, "objective.name")
    if name not in OBJECTIVES:
        raise ConfigError(f"objective.name must be one of {sorted(OBJECTIVES)}, got {name!r}")
    beta = _number(cfg, "objective.beta", exclusive_min=0, allow_none=True)
    n = _number(cfg, "objective.n", minimum=1, allow_none=True)
    if name in ("bon", "bon_sft"):
        if n is None:
            raise ConfigError(f"objective.n must be set for objective={name} (an integer ≥ 1)")
        if int(n) != n:
            hint = ""
            if not OmegaConf.is_interpolation(cfg.objective, "beta"):
                hint = (f" (N = 1/β + 1 from objective.beta={beta!r}; choose β = 1/(N − 1) for a whole N, "
                        "e.g. 1/3, 1/7, 1/15)")
            raise ConfigError(f"objective.n must be an integer for objective={name}, got {n!r}{hint}")
    elif beta is None:
        raise ConfigError(f"objective.beta must be set (> 0) for objective={name}")
    if name == "vbon":
        _choice(cfg, "objective.bound", ("l1", "exact"))
        _choice(cfg, "objective.exact_scale", ("beta", "seed"))
    if name == "bon_sft":
        _number(cfg, "objective.samples_per_prompt", integer=True, minimum=1)
    if n is not None and beta is not None and not math.isclose(n, 1.0 / beta + 1.0, rel_tol=1e-6):
        primary = "objective.n or objective.beta" if name in ("bon", "bon_sft") else "objective.beta"
        raise ConfigError(
            f"objective.n={n} and objective.beta={beta} disagree (N = 1/β + 1); for objective={name} set "
            f"{primary} only, the other follows it"
        )


def _choice(cfg: DictConfig, key: str, allowed: tuple):
    value = _get(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    return value


def _validate_training(cfg: DictConfig) -> None:
    from vbon_exp.trainers import ALGOS

    resume = _get(cfg, "train.resume")
    if resume not in ("auto", True, False):
        raise ConfigError(f"train.resume must be auto, true or false, got {resume!r}")
    _number(cfg, "train.checkpoint_every", integer=True, minimum=0)
    _number(cfg, "train.log_every", integer=True, minimum=1)
    _number(cfg, "train.max_updates", integer=True, minimum=0, allow_none=True)
    name = _get(cfg, "objective.name")
    if name == "bon_sft":
        prefix = "objective.sft"
        _number(cfg, f"{prefix}.epochs", integer=True, minimum=1)
        _number(cfg, f"{prefix}.batch_size", integer=True, minimum=1)
    elif name in ("vbon", "kl_rl"):
        prefix = "algo"
        _choice(cfg, "algo.name", tuple(ALGOS))
        for key in ("batch_size", "minibatch_size", "ppo_epochs", "total_episodes"):
            _number(cfg, f"algo.{key}", integer=True, minimum=1)
        _number(cfg, "algo.clip", exclusive_min=0)
        _number(cfg, "algo.vf_clip", exclusive_min=0)
        _number(cfg, "algo.vf_coef", minimum=0)
        _number(cfg, "algo.gamma", minimum=0, maximum=1)
        _number(cfg, "algo.lam", minimum=0, maximum=1)
        if _get(cfg, "algo.name") == "rloo":
            k = _number(cfg, "algo.rloo_k", integer=True, minimum=2)
            if _get(cfg, "algo.batch_size") % k:
                raise ConfigError(f"algo.batch_size={_get(cfg, 'algo.batch_size')} must be divisible by "
                                  f"algo.rloo_k={k}")
    else:
        return
    _number(cfg, f"{prefix}.lr", exclusive_min=0)
    _choice(cfg, f"{prefix}.schedule", ("linear", "constant"))
    _number(cfg, f"{prefix}.trainable_layers", integer=True, minimum=1, allow_none=True)


# --------------------------------------------------------------------------- schemas: unknown keys and types
# The nodes a run reads, each checked against the dataclass (or key set) that consumes it, so a typo such as
# `+algo.lrr=1` or `algo.lr=fast` fails here, before any model loads, naming the key and what is allowed.

TOP_LEVEL = {"task", "objective", "algo", "seed", "device", "sampling", "reference", "eval", "train", "wandb",
             "paths", "model", "reward", "sampler", "hydra"}  # hydra: present when composed with return_hydra_config
PLAIN_NODES = {
    "reference": {"m", "chunk_prompts", "keep_texts", "cache_dir"},
    "eval": {"samples_per_prompt", "batch_size", "score_batch_size"},
    "wandb": {"mode", "project", "entity", "group", "tags"},
    "paths": {"output_root", "cache_dir"},
}


def _dataclass_nodes():
    from vbon_exp.sampling import SamplingConfig
    from vbon_exp.trainers.rl import RLConfig, TrainConfig
    from vbon_exp.trainers.sft import SFTConfig

    return {"sampling": SamplingConfig, "algo": RLConfig, "train": TrainConfig, "objective.sft": SFTConfig}


def _type_ok(value, annotation) -> bool:
    import types
    import typing

    if annotation is typing.Any:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("NoneType", "null")


def _check_node(cfg: DictConfig, key: str, allowed: set, hints: dict | None = None) -> None:
    node = OmegaConf.select(cfg, key)
    if node is None:
        return
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{key} must be a mapping of settings, got {node!r}")
    unknown = sorted(set(node.keys()) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{key}.{u}' for u in unknown)}; {key} takes "
                          f"{', '.join(sorted(allowed))}")
    for name, annotation in (hints or {}).items():
        if name in node:
            value = _get(cfg, f"{key}.{name}")
            if not _type_ok(value, annotation):
                raise ConfigError(f"{key}.{name} must be of type {_type_name(annotation)}, got {value!r}")


def _validate_schema(cfg: DictConfig) -> None:
    import dataclasses
    import typing

    unknown = sorted(set(cfg.keys()) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; known: {sorted(TOP_LEVEL)}")
    for key, allowed in PLAIN_NODES.items():
        _check_node(cfg, key, allowed)
    for key, cls in _dataclass_nodes().items():
        hints = typing.get_type_hints(cls)
        _check_node(cfg, key, {f.name for f in dataclasses.fields(cls)}, hints)
