"""An exactly solvable alignment task.

A tiny GPT-2 (random weights from a fixed seed) over a vocabulary of V symbols writes responses of exactly L tokens
(no EOS), so every response can be enumerated: V^L per prompt (6^5 = 7,776 by default). The reward is a fixed
random function of (last prompt token, response) with (almost surely) distinct values, or, with `reward_levels`, that
function rounded to a few levels (many responses tie: the discrete-reward case of BoN). Everything the paper
defines is then computable exactly: π_ref(y|x), F_x, π_BoN for any N, π* ∝ π_ref·exp(r/β), and KLs of any policy.
That reward is the proxy every method optimises; beside it the oracle knows a gold reward (`task.gold`: the proxy
plus a fixed perturbation, vbon_exp/tasks/synthetic_gold.py), so each policy's gold reward, and where optimising the
proxy stops paying in gold, are exact too.

The model, tokenizer and reward table are written with `save_pretrained` / safetensors and read back with
`from_pretrained`, like any real model, so the synthetic task runs the same loading code as the real tasks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vbon_exp.modeling import Samples, load_causal_lm, load_tokenizer
from vbon_exp.tasks.base import Task, prompts_digest
from vbon_exp.tasks.synthetic_oracle import SyntheticOracle
from vbon_exp.settings.task import SyntheticTaskConfig, synthetic_architecture  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

SYMBOLS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class SyntheticSpec:
    """What determines the built artifacts (model weights, reward table, prompts): SyntheticTaskConfig's fields
    without the sampling defaults."""

    vocab_size: int
    response_length: int
    prompt_length: int
    num_prompts: int
    n_layer: int
    n_embd: int
    n_head: int
    init_std: float
    model_seed: int
    reward_seed: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- the reward


# Quantised rewards (`reward_levels` = L ≥ 2) are rounded to the nearest of L equally spaced values in this range
# (values outside clamp to its ends): the table reward has std ≈ 1, so most of π_ref's mass lies inside.
LEVEL_RANGE = (-2.0, 2.0)


class TabularReward:
    """r(x, y) = Σ_t W[t, y_t] + Σ_t U[y_t, y_{t+1}] + Σ_t Q[x_last, y_t]: position, transition and
    prompt-interaction terms with Gaussian weights, so rewards are distinct with probability 1; with `levels` ≥ 2,
    rounded to the nearest of that many equally spaced values in LEVEL_RANGE (ties by design)."""

    name = "synthetic-tabular"

    def __init__(self, tables: dict[str, torch.Tensor], fingerprint: str, levels: int = 0):
        self.w, self.u, self.q = tables["w"], tables["u"], tables["q"]
        self.levels = int(levels)
        # caches are keyed by the fingerprint: quantised rewards are another reward (the default keeps its old key)
        self.fingerprint = fingerprint + (f":levels{self.levels}" if self.levels else "")

    @classmethod
    def random(cls, spec: SyntheticSpec) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(spec.reward_seed)
        v, length = spec.vocab_size, spec.response_length
        scale = (3 * length - 1) ** -0.5  # reward std ≈ 1
        return {
            "w": torch.randn(length, v, generator=g, dtype=torch.float64) * scale,
            "u": torch.randn(v, v, generator=g, dtype=torch.float64) * scale,
            "q": torch.randn(v, v, generator=g, dtype=torch.float64) * scale,
        }

    @classmethod
    def from_pretrained(cls, directory: str | Path, levels: int = 0) -> "TabularReward":
        path = Path(directory) / "reward.safetensors"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return cls(load_file(str(path)), fingerprint=f"{cls.name}:{digest}", levels=levels)

    def score_ids(self, prompt_last: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
        """float64 rewards for [B] last prompt tokens and [B, L] responses."""
        prompt_last, response_ids = prompt_last.cpu(), response_ids.cpu()
        length = response_ids.shape[1]
        r = self.w[torch.arange(length), response_ids].sum(-1)
        r = r + self.u[response_ids[:, :-1], response_ids[:, 1:]].sum(-1)
        r = r + self.q[prompt_last[:, None], response_ids].sum(-1)
        return quantise(r, self.levels) if self.levels else r

    def __call__(self, samples: Samples) -> torch.Tensor:
        # rewards are float32 everywhere in the pipeline (cache, comparisons), as a neural reward model's would be
        return self.score_ids(samples.prompt_ids[:, -1], samples.response_ids).float()


def gold_perturbation(spec: SyntheticSpec, gold_seed: int) -> TabularReward:
    """P of the gold reward gold = r + task.gold·(P − max(r, 0)²/2) (vbon_exp/tasks/synthetic_gold.py): a table reward
    of the proxy's form (std ≈ 1) drawn from its own seed, the proxy's random error (built in memory: only the oracle
    reads it)."""
    tables = TabularReward.random(replace(spec, reward_seed=gold_seed))
    return TabularReward(tables, fingerprint=f"synthetic-gold-perturbation:seed{gold_seed}")


def quantise(rewards: torch.Tensor, levels: int) -> torch.Tensor:
    """Each reward rounded to the nearest of `levels` equally spaced values spanning LEVEL_RANGE (clamped to it)."""
    low, high = LEVEL_RANGE
    step = (high - low) / (levels - 1)
    return low + torch.round((rewards.clamp(low, high) - low) / step) * step


# --------------------------------------------------------------------------- building the artifacts


def _make_tokenizer(spec: SyntheticSpec):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {SYMBOLS[i]: i for i in range(spec.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def model_config(spec):
    """The synthetic π_ref's GPT2Config, from a SyntheticSpec or the task's config node (the same fields)."""
    from transformers import GPT2Config

    settings = synthetic_architecture(spec)
    settings.pop("model_type")
    return GPT2Config(**settings)


def _make_model(spec: SyntheticSpec):
    from transformers import GPT2LMHeadModel

    config = model_config(spec)
    torch.manual_seed(spec.model_seed)
    return GPT2LMHeadModel(config)


def ensure_artifacts(spec: SyntheticSpec, root: str | Path) -> Path:
    """Build (once) and return the directory holding the synthetic model, tokenizer and reward table.

    Built in a temp dir and renamed into place, so a crash never leaves a half-written model behind."""
    target = Path(root) / f"synthetic-{spec.digest()}"
    if (target / "spec.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-synthetic-"))
    try:
        _make_model(spec).save_pretrained(tmp)
        _make_tokenizer(spec).save_pretrained(tmp)
        save_file(TabularReward.random(spec), str(tmp / "reward.safetensors"))
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built synthetic task artifacts in %s", target)
    return target


def _weights_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith((".safetensors", ".json")):
            h.update(name.encode())
            h.update((directory / name).read_bytes())
    return h.hexdigest()[:16]


def _choose_prompts(spec: SyntheticSpec) -> list[list[int]]:
    all_prompts = list(itertools.product(range(spec.vocab_size), repeat=spec.prompt_length))
    if spec.num_prompts > len(all_prompts):
        raise ValueError(
            f"task.num_prompts={spec.num_prompts} exceeds the {len(all_prompts)} distinct prompts of "
            f"length {spec.prompt_length} over {spec.vocab_size} symbols"
        )
    g = torch.Generator().manual_seed(spec.model_seed + 1)
    pick = torch.randperm(len(all_prompts), generator=g)[: spec.num_prompts].sort().values
    return [list(all_prompts[int(i)]) for i in pick]


# --------------------------------------------------------------------------- the task


def build(cfg: SyntheticTaskConfig, *, device: torch.device, cache_dir: str, temperature: float, **_) -> Task:
    spec = SyntheticSpec(
        cfg.vocab_size, cfg.response_length, cfg.prompt_length, cfg.num_prompts, cfg.n_layer, cfg.n_embd, cfg.n_head,
        cfg.init_std, cfg.model_seed, cfg.reward_seed,
    )
    directory = ensure_artifacts(spec, Path(cache_dir) / "models")
    tokenizer = load_tokenizer(str(directory))
    reference = load_causal_lm(str(directory), device).eval().requires_grad_(False)
    reward = TabularReward.from_pretrained(directory, levels=cfg.reward_levels)
    prompts = _choose_prompts(spec)
    gold = (cfg.gold, gold_perturbation(spec, cfg.gold_seed)) if cfg.gold > 0 else None
    oracle = SyntheticOracle(spec, prompts, reward, temperature, gold=gold)
    oracle.set_reference(reference)
    return Task(
        name="synthetic",
        tokenizer=tokenizer,
        reference=reference,
        policy_init=str(directory),
        reward=reward,
        train_prompts=prompts,
        test_prompts=prompts,
        eos_id=None,
        pad_id=0,
        fingerprint={
            "reference": f"{directory.name}:{_weights_digest(directory)}",
            "reward": reward.fingerprint,
            "train_prompts": prompts_digest(prompts),
            "test_prompts": prompts_digest(prompts),
        },
        oracle=oracle,
    )
