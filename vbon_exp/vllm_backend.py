"""Optional vLLM sampler backend (`sampler=vllm`), for GPU users: the same `sample_responses` contract as the native
sampler (rows grouped by prompt in prompt order, left-padded prompts, right-padded responses, mask 1 up to and
including EOS), with generation done by a vLLM engine colocated with the training process.

vLLM is not a dependency (it needs a CUDA GPU): `require_vllm` raises, naming the package, when it is missing, and
the run calls it before anything is sampled. The engine loads the model from the directory or hub id it was loaded
from (`model.config._name_or_path`); before each call the current parameters of the torch model are pushed into
the engine when they have changed since the last push (training rollouts), detected by the parameters' in-place
version counters.

Distribution: vLLM samples softmax(logits / temperature) with top-k/top-p as here, but with its own kernels and
random streams, so draws are not bit-identical to the native sampler's for the same seed (the reference cache key
records the backend). Every call takes its seed from the caller's torch.Generator, so runs stay reproducible on one
machine and vLLM version.
"""

from __future__ import annotations

import logging

import torch

from vbon_exp.adapters import served_weights
from vbon_exp.errors import SamplerBackendError
from vbon_exp.modeling import Samples
from vbon_exp.sampling import SamplerBackend, left_pad, register_sampler

log = logging.getLogger(__name__)


def require_vllm():
    """The vllm module, or SamplerBackendError naming the package when it cannot be imported."""
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise SamplerBackendError(
            "sampler=vllm needs the `vllm` package (and a CUDA GPU), which is not installed: `pip install vllm`, "
            f"or use the built-in sampler with sampler=native (the default). ({type(err).__name__}: {err})"
        ) from err
    return vllm


class _Engine:
    """One vLLM engine per torch model, with the bookkeeping to push changed weights."""

    def __init__(self, model, options: dict):
        vllm = require_vllm()
        source = getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", None)
        if not source:
            raise ValueError("sampler=vllm: the model has no _name_or_path to load into vLLM (save_pretrained it)")
        opts = {"gpu_memory_utilization": 0.3, "enforce_eager": False, **(options or {})}
        opts.pop("name", None)
        dtype = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(
            next(model.parameters()).dtype, "auto")
        self.llm = vllm.LLM(model=str(source), dtype=dtype, **opts)
        self.version = None

    @staticmethod
    def _params_version(model) -> int:
        return sum(p._version for p in model.parameters())

    def sync(self, model) -> None:
        version = self._params_version(model)
        if self.version is None:  # just loaded from the same weights the model was loaded from
            self.version = version
            if not any(p.requires_grad for p in model.parameters()):
                return
        if version == self.version:
            return
        engine = self.llm.llm_engine
        try:
            target = engine.model_executor.driver_worker.model_runner.model
        except AttributeError:
            target = engine.model_executor.driver_worker.worker.model_runner.model
        target.load_weights(list(served_weights(model)))
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()
        self.version = version


_ENGINES: dict[int, _Engine] = {}


def sample_responses_vllm(
    model, prompts: list[list[int]], n_per_prompt: int, cfg, *, eos_id: int | None, pad_id: int, generator,
    prompt_index: list[int] | None = None, desc: str | None = None,
) -> Samples:
    vllm = require_vllm()
    from vllm.inputs import TokensPrompt

    engine = _ENGINES.get(id(model))
    if engine is None:
        engine = _ENGINES[id(model)] = _Engine(model, cfg.backend_options or {})
    engine.sync(model)
    device = next(model.parameters()).device
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=gen_device))
    params = vllm.SamplingParams(
        n=n_per_prompt, temperature=cfg.temperature, top_k=cfg.top_k if cfg.top_k > 0 else -1, top_p=cfg.top_p,
        max_tokens=cfg.max_new_tokens, seed=seed, ignore_eos=eos_id is None,
        stop_token_ids=[eos_id] if eos_id is not None else None, detokenize=False,
    )
    outputs = engine.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
    index = list(range(len(prompts))) if prompt_index is None else list(prompt_index)
    rows_prompt, responses, pidx = [], [], []
    for i, out in enumerate(outputs):  # vLLM returns requests in submission order
        for completion in out.outputs:
            ids = list(completion.token_ids)[: cfg.max_new_tokens]
            rows_prompt.append(prompts[i])
            responses.append(ids)
            pidx.append(index[i])
    prompt_ids, prompt_mask = left_pad(rows_prompt, pad_id, device)
    width = max(1, max(len(r) for r in responses))
    response_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(responses), width), dtype=torch.long)
    for j, ids in enumerate(responses):
        if ids:
            response_ids[j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            response_mask[j, : len(ids)] = 1
    return Samples(torch.tensor(pidx, dtype=torch.long, device=device), prompt_ids, prompt_mask,
                   response_ids.to(device), response_mask.to(device))


# `sampler=vllm`: registered on import (vbon_exp.config imports this module, so the name is known before any run).
register_sampler("vllm", SamplerBackend(sample_responses_vllm, require=lambda: require_vllm() and None))
