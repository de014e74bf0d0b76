"""Reward models: anything that maps scored (prompt, response) pairs to one float per pair.

A reward is a callable `reward(samples) -> FloatTensor[B]` with a `name` (for messages) and a `fingerprint`
(for cache keys). `score` batches it and refuses non-finite values before anything downstream uses them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from vbon_exp.errors import ConfigError, RewardError
from vbon_exp.meters import SCORING
from vbon_exp.modeling import Samples
from vbon_exp.settings.reward import ClassifierRewardConfig, VaderRewardConfig  # noqa: F401  (re-exported)


class Reward(Protocol):
    name: str
    fingerprint: str

    def __call__(self, samples: Samples) -> torch.Tensor: ...


@torch.inference_mode()
def score(reward: Reward, samples: Samples, batch_size: int = 256, what: str = "batch") -> torch.Tensor:
    """Rewards for every pair, float32 on CPU; raises RewardError naming the reward and the rows on NaN/inf.

    Pairs are scored in batches of similar length (sorted by prompt + response tokens, the text the reward model
    reads), so a padded reward model pads little; the rewards come back in the rows' order."""
    t0 = time.perf_counter()
    n = len(samples)
    if n == 0:
        return torch.zeros(0)
    lengths = (samples.prompt_mask.sum(-1) + samples.response_mask.sum(-1)).cpu()
    order = torch.argsort(lengths, stable=True)
    out = torch.empty(n, dtype=torch.float32)
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        part = samples.select(rows.to(samples.prompt_index.device))
        r = reward(part).detach().float().cpu()
        bad = ~torch.isfinite(r)
        if bool(bad.any()):
            bad_rows = sorted(int(i) for i in rows[bad])
            raise RewardError(
                f"reward model {reward.name!r} returned {r[bad][0].item()} for {len(bad_rows)} of {len(part)} "
                f"pairs in {what} (rows {bad_rows[:10]}{' ...' if len(bad_rows) > 10 else ''}; first bad row "
                f"{bad_rows[0]}); stopping before anything is written"
            )
        out[rows] = r
    SCORING.add(n, time.perf_counter() - t0)
    return out


def score_samples(reward: Reward, samples: Samples, batch_size: int = 256, what: str = "batch") -> Samples:
    """Fill `samples.rewards` once (no-op when already scored)."""
    if samples.rewards is None:
        samples.rewards = score(reward, samples, batch_size, what)
    return samples


# --------------------------------------------------------------------------- reward models


def decode_pairs(tokenizer, samples: Samples, with_prompt: bool = True) -> list[str]:
    """Texts the reward model reads: prompt + response (or the response alone), special tokens dropped."""
    out = []
    for i in range(len(samples)):
        ids = samples.response_ids[i][samples.response_mask[i].bool()].tolist()
        if with_prompt:
            ids = samples.prompt_ids[i][samples.prompt_mask[i].bool()].tolist() + ids
        out.append(tokenizer.decode(ids, skip_special_tokens=True))
    return out


def _prob(logits: torch.Tensor, index: int) -> torch.Tensor:
    """p(class | text): the paper's IMDB reward r(y) = p(POS | y) (Amini et al. 2025, §5)."""
    return torch.softmax(logits, dim=-1)[:, index]


def _logit(logits: torch.Tensor, index: int) -> torch.Tensor:
    """The class's logit: what the seed code trained on (rycolab/vbon)."""
    return logits[:, index]


def _margin(logits: torch.Tensor, index: int) -> torch.Tensor:
    """The class's logit minus the largest other logit (two classes: logit(POS) − logit(NEG) = log-odds)."""
    others = torch.cat([logits[:, :index], logits[:, index + 1:]], dim=-1)
    return logits[:, index] - others.max(dim=-1).values


# reward.output -> (logits [B, C], class index) -> reward [B]
CLASSIFIER_OUTPUTS = {"prob": _prob, "logit": _logit, "margin": _margin}


class ClassifierReward:
    """A sequence classifier as the reward: for the class named `label` in the model config's id2label (looked up by
    name, never by index) its probability, logit or margin (`reward.output`, CLASSIFIER_OUTPUTS), or the single
    output of a one-logit reward head (`label: null`, `output: logit`).

    Optionally a fixed score (`eos_penalty`, e.g. −20 for TL;DR as in the seed code) replaces the reward of responses
    that end without EOS."""

    def __init__(self, cfg: "ClassifierRewardConfig", *, device, policy_tokenizer, eos_id: int | None = None):
        name_or_path, label, with_prompt = cfg.name_or_path, cfg.label, cfg.with_prompt
        max_length, batch_size, eos_penalty = cfg.max_length, cfg.batch_size, cfg.eos_penalty
        trust_remote_code, dtype = cfg.trust_remote_code, cfg.dtype
        from transformers import AutoModelForSequenceClassification

        from vbon_exp.modeling import _load_error, load_tokenizer, quiet_transformers

        quiet_transformers()
        self.name = name_or_path
        self.policy_tokenizer, self.with_prompt = policy_tokenizer, with_prompt
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.eos_penalty, self.eos_id = eos_penalty, eos_id
        self.tokenizer = load_tokenizer(name_or_path, trust_remote_code, key="reward.name_or_path")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code, dtype=getattr(torch, dtype) if dtype else None
            )
        except Exception as err:
            raise _load_error("reward model", name_or_path, err, "reward.name_or_path") from err
        self.model.to(device).eval().requires_grad_(False)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.index = self._label_index(label)
        self.output = cfg.output
        if self.output != "logit" and self.model.config.num_labels < 2:
            from vbon_exp.errors import ConfigError

            raise ConfigError(f"reward.output={self.output} needs a classifier with ≥ 2 classes; {name_or_path!r} has "
                              "one output (a reward head): use reward.output=logit")
        # the logit reward keeps its old cache keys (the rewards are unchanged); other outputs have their own
        output_key = "" if self.output == "logit" else f":{self.output}"
        self.fingerprint = f"classifier:{name_or_path}:{label}:{with_prompt}:{max_length}:{eos_penalty}{output_key}"

    def _label_index(self, label: str | None) -> int:
        id2label = {int(k): v for k, v in (self.model.config.id2label or {}).items()}
        from vbon_exp.errors import ConfigError

        if label is None:
            if self.model.config.num_labels != 1:
                raise ConfigError(
                    f"reward model {self.name!r} has {self.model.config.num_labels} classes {id2label}: set "
                    "reward.label to the class whose logit is the reward"
                )
            return 0
        matches = [i for i, name in id2label.items() if str(name).lower() == str(label).lower()]
        if not matches:
            raise ConfigError(f"reward.label={label!r} is not a class of {self.name!r}; its classes are {id2label}")
        return matches[0]

    @torch.inference_mode()
    def __call__(self, samples: Samples) -> torch.Tensor:
        """Logits of every pair. Texts are tokenized once, unpadded, then scored in batches of similar token
        length (sorted; each batch padded only to its own longest), and put back in the rows' order."""
        texts = decode_pairs(self.policy_tokenizer, samples, self.with_prompt)
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        lengths = torch.tensor([len(ids) for ids in enc["input_ids"]])
        order = torch.argsort(lengths, stable=True).tolist()
        r = torch.empty(len(texts), dtype=torch.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({k: [enc[k][i] for i in rows] for k in enc.keys()}, padding=True,
                                       return_tensors="pt").to(self.device)
            r[torch.tensor(rows)] = CLASSIFIER_OUTPUTS[self.output](self.model(**batch).logits.float(), self.index).cpu()
        if self.eos_penalty is not None and self.eos_id is not None:
            ended = ((samples.response_ids == self.eos_id) & samples.response_mask.bool()).any(-1).cpu()
            r = torch.where(ended, r, torch.full_like(r, float(self.eos_penalty)))
        return r


class VaderReward:
    """VADER's compound sentiment score in [−1, 1] (Hutto & Gilbert 2014; lexicon shipped in the PyPI package
    `vaderSentiment`): an offline sentiment reward that needs no model download."""

    name = "vader"

    def __init__(self, cfg: "VaderRewardConfig", *, policy_tokenizer, device=None, eos_id=None):
        with_prompt = cfg.with_prompt
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as err:
            raise ImportError("reward=vader needs the vaderSentiment package: pip install vaderSentiment") from err
        self.analyzer = SentimentIntensityAnalyzer()
        self.policy_tokenizer, self.with_prompt = policy_tokenizer, with_prompt
        self.fingerprint = f"vader:{with_prompt}"

    def __call__(self, samples: Samples) -> torch.Tensor:
        texts = decode_pairs(self.policy_tokenizer, samples, self.with_prompt)
        return torch.tensor([self.analyzer.polarity_scores(t)["compound"] for t in texts], dtype=torch.float32)


# --------------------------------------------------------------------------- configs and the registry


@dataclass(frozen=True)
class RewardKind:
    config: type  # the schema of conf/reward/<name>.yaml
    build: Callable  # (config, *, device, policy_tokenizer, eos_id) -> Reward


# Reward kinds by `reward.type`.
REWARDS: dict[str, RewardKind] = {
    "classifier": RewardKind(ClassifierRewardConfig, ClassifierReward),
    "vader": RewardKind(VaderRewardConfig, VaderReward),
}


def build_reward(cfg, *, device, policy_tokenizer, eos_id: int | None):
    """The reward model of a validated `reward` node (a config dataclass of REWARDS)."""
    return REWARDS[cfg.type].build(cfg, device=device, policy_tokenizer=policy_tokenizer, eos_id=eos_id)
