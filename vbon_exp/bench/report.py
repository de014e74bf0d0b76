"""What the bench prints and judges: one row per measurement with its median-based value, its best (minimum-time)
value, the other processes' load while its section ran, and on the CPU the target it is held to; the GPU-hour
estimate from a written summary (`--estimate`)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from vbon_exp.bench.scale import MODEL_NAMES

TARGETS = {  # key: (comparison, bound), judged on the median-based value; set for the CPU, not reported on a GPU
    "sampler_speedup_tiny": (">=", 5.0),
    "sampler_speedup_small": (">=", 1.3),
    "step_time_ratio_vs_trl": ("<=", 0.4),
    "busy_sampler_slowdown_auto": ("<=", 2.0),
    "bytes_per_cached_reward": ("<=", 4.0),
}

# (key, label, format, section whose load the row shows); a key with a `<key>_best` twin shows it beside
ROWS = [
    ("sampler_tok_s_tiny", "tiny GPT-2 (2×128): ours, tokens/s", "{:,.0f}", "sampler tiny"),
    ("generate_tok_s_tiny", "tiny GPT-2: transformers.generate, tokens/s", "{:,.0f}", "sampler tiny"),
    ("sampler_speedup_tiny", "tiny GPT-2: speed-up", "{:.2f}×", "sampler tiny"),
    ("sampler_tok_s_small", "GPT-2-small-sized (12×768): ours, tokens/s", "{:,.0f}", "sampler small"),
    ("generate_tok_s_small", "GPT-2-small-sized: transformers.generate, tokens/s", "{:,.0f}", "sampler small"),
    ("sampler_speedup_small", "GPT-2-small-sized: speed-up", "{:.2f}×", "sampler small"),
    ("step_s_ours", "RLOO step ({batch} completions): ours, s", "{:.2f}", "RLOO step"),
    ("step_s_trl", "RLOO step ({batch} completions): TRL, s", "{:.2f}", "RLOO step"),
    ("step_time_ratio_vs_trl", "RLOO step time ratio ours / TRL", "{:.2f}", "RLOO step"),
    ("bytes_per_cached_reward", "reference cache: bytes per reward", "{:.3f}", "reference cache"),
    ("peak_rss_mb", "reference cache build: peak RSS, MB", "{:,.0f}", "reference cache"),
    ("cache_build_s", "reference cache build: seconds", "{:.1f}", "reference cache"),
]


def size_rows(s: dict) -> list[tuple[str, str, str, str]]:
    """The rows of the sections that run on the `--size` model (their labels name the settings)."""
    model = MODEL_NAMES.get(s["size"], s["size"])
    ppo = f"PPO step ({model}, {s['ppo_batch']} episodes, {s['ppo_epochs']}×{s['num_minibatches']} opt. steps)"
    rows = [
        ("ppo_step_s", ppo + ": s", "{:.2f}", "PPO step"),
        ("ppo_episodes_per_s", "PPO: episodes/s", "{:,.1f}", "PPO step"),
        ("cache_samples_per_s", f"reference cache ({model}, {s['cache_new_tokens']} tokens): samples/s", "{:,.0f}",
         "reference cache"),
        ("vllm_tok_s", f"vLLM sampler ({model}): tokens/s", "{:,.0f}", "vLLM sampler"),
        ("vllm_speedup_vs_ours", "vLLM sampler / ours, tokens/s", "{:.2f}×", "vLLM sampler"),
    ]
    if s["device"] == "cuda":
        rows += [("ppo_peak_gpu_mem_gb", "PPO step: peak GPU memory, GiB", "{:.1f}", "PPO step"),
                 ("cache_peak_gpu_mem_gb", "reference cache build: peak GPU memory, GiB", "{:.1f}",
                  "reference cache")]
    return rows


BUSY_ROWS = [  # (what, the key stem, the quiet key)
    ("our sampler (tiny), s", "busy_sampler", "sampler_times_s_tiny"),
    ("our RLOO step, s", "busy_rloo", "step_times_s_ours"),
]


def target_met(key: str, value) -> bool | None:
    """Whether `value` meets the target of `key`; None when it has none or was not measured."""
    if key not in TARGETS or value is None:
        return None
    op, bound = TARGETS[key]
    return bool(value >= bound if op == ">=" else value <= bound)


def verdict(key: str, value) -> str:
    met = target_met(key, value)
    if met is None:
        return ""
    op, bound = TARGETS[key]
    return f"target {op} {bound:g}: {'met' if met else 'NOT met'}"


def targets(summary: dict) -> dict:
    return {k: {"bound": f"{op} {b:g}", "value": summary.get(k), "met": target_met(k, summary.get(k))}
            for k, (op, b) in TARGETS.items()}


def _shown(fmt: str, value) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "skipped"


def print_rows(summary: dict, rows) -> None:
    loads = summary["machine"].get("other_processes_cores_by_stage", {})
    width = max(len(label) for _, label, _, _ in rows)
    cpu = summary["device"] == "cpu"
    print(f"{'measurement':<{width}}  {'median':>12}  {'best':>12}  {'load':>5}  {'target' if cpu else ''}")
    print("-" * (width + 60))
    for key, label, fmt, section in rows:
        value, best, load = summary.get(key), summary.get(f"{key}_best"), loads.get(section)
        print(f"{label:<{width}}  {_shown(fmt, value):>12}  {_shown(fmt, best) if best is not None else '':>12}  "
              f"{'' if load is None else f'{load:.2f}':>5}  {verdict(key, value) if cpu else ''}")


def print_memory(summary: dict) -> None:
    """Sections 7 and 8: the PPO update's seconds and peak memory per setting; the KL evaluation's peak memory."""
    table = summary.get("ppo_precision")
    if table:
        first = next(row for row in table.values() if "skipped" not in row)
        print(f"\nPPO update, GPT-2-small-sized (batch {first['batch']} × {first['new_tokens']} new tokens, "
              f"{first['epochs']} epoch(s)), each setting in its own process:")
        print(f"  {'setting':<18} {'step s':>8} {'peak GiB':>9} {'trainable':>12}")
        for name, row in table.items():
            if "skipped" in row:
                print(f"  {name:<18} skipped: {row['skipped']}")
                continue
            print(f"  {name:<18} {row['step_s']:>8.2f} {row['peak_gb']:>9.3f} {row['trainable_params']:>12,}")
    kl = summary.get("kl_eval_memory")
    if kl:
        first = next(iter(kl.values()))
        print(f"\nKL evaluation (log-probs + full KL to π_ref, {first['positions']} positions, vocabulary "
              f"{first['vocab']:,}), peak memory above the weights:")
        for chunk, row in kl.items():
            label = "unchunked" if chunk == "0" else f"chunk {chunk}"
            print(f"  {label:<18} {row['peak_gb']:>8.3f} GiB   {row['seconds']:.2f} s")


def print_busy(summary: dict) -> None:
    """The busy-core table: quiet (the bench's own threads) against one busy core at auto and at 2 threads."""
    if "busy_auto_threads" not in summary:
        return
    quiet_threads = summary["machine"].get("torch_threads")
    load = summary.get("busy_other_processes_cores") or 0.0
    print(f"\nwith one busy core (a spinning process; other processes' load {load:.2f} cores; auto chose "
          f"{summary['busy_auto_threads']} thread(s): {summary['busy_auto_reason']})")
    print(f"{'median (best)':<28}{f'quiet, {quiet_threads} thr.':>18}{'busy, auto':>22}{'busy, 2 thr.':>22}")
    for what, stem, quiet_key in BUSY_ROWS:
        quiet = summary.get(quiet_key)
        cells = [f"{statistics.median(quiet):.3f} ({min(quiet):.3f})" if quiet else "skipped"]
        for label in ("auto", "2"):
            median, best = summary[f"{stem}_s_{label}"], summary[f"{stem}_s_{label}_best"]
            slowdown = summary.get(f"{stem}_slowdown_{label}")
            cells.append(f"{median:.3f} ({best:.3f})" + (f" {slowdown:.1f}×" if slowdown else ""))
        print(f"{what:<28}" + "".join(f"{c:>22}" if i else f"{c:>18}" for i, c in enumerate(cells)))
    key = "busy_sampler_slowdown_auto"
    print(f"slowdown of our sampler at auto: {verdict(key, summary.get(key))}")


def print_table(summary: dict, out: Path) -> None:
    batch = summary["settings"].get("batch", 64)
    rows = [(key, label.replace("{batch}", str(batch)), fmt, section) for key, label, fmt, section in ROWS]
    print_rows(summary, rows + size_rows(summary["settings"]))
    print_busy(summary)
    print_memory(summary)
    for name, why in summary.get("skipped", {}).items():
        print(f"{name}: skipped ({why})")
    for name, err in summary.get("failed", {}).items():
        print(f"{name}: FAILED ({err.splitlines()[0] if err else ''})")
    for name, loads in summary.get("retimed", {}).items():
        print(f"{name}: timed {len(loads)} times (other processes' load " + ", ".join(
            "?" if x is None else f"{x:.2f}" for x in loads) + " cores); the least disturbed attempt is shown")
    m = summary["machine"]
    where = f"{m['gpu']} ({m['gpu_memory_gb']:.0f} GiB), CUDA {m['cuda']}, " if "gpu" in m else ""
    print(f"\n{summary['device']}, {summary['dtype']}: {where}{m['cpus']} CPUs, torch {m['torch']} "
          f"({m['torch_threads']} threads: {m.get('threads_reason', 'torch default')}), transformers "
          f"{m['transformers']}" + (f", trl {m['trl']}" if "trl" in m else "")
          + (f", vllm {m['vllm']}" if "vllm" in m else "") + f"; load average {m['load_average_1min_start']:.2f} "
          "before the bench" + ("" if m.get("other_processes_cores") is None else
                                f"; other processes kept {m['other_processes_cores']:.2f} cores busy on average "
                                "while it ran (the bench's children, the busy-core spinner among them, count as its "
                                "own)"))
    if "ppo_episodes_per_s" in summary and "cache_samples_per_s" in summary:
        print(f"hours of a run here ≈ (episodes / {summary['ppo_episodes_per_s']:.3g} + (cache + eval samples) / "
              f"{summary['cache_samples_per_s']:.3g}) / 3600   (scripts/bench.py --estimate)")
    print(f"written: {out / 'summary.json'}")


def estimate_hours(summary: dict, episodes: float, cache_samples: float, eval_samples: float) -> dict[str, float]:
    """Hours a run takes on the bench's device, model size and dtype: training episodes at the PPO step's rate,
    reference-cache and evaluation samples at the cache build's rate (both are sampling + scoring; evaluation's
    extra log-prob passes are a fraction of its sampling). {"train", "cache", "eval", "total"} in hours."""
    work = {"train": (episodes, "ppo_episodes_per_s"), "cache": (cache_samples, "cache_samples_per_s"),
            "eval": (eval_samples, "cache_samples_per_s")}
    hours = {}
    for part, (count, key) in work.items():
        rate = summary.get(key)
        if count and not (isinstance(rate, (int, float)) and rate > 0):
            raise ValueError(f"the bench summary has no {key} (run scripts/bench.py without --skip-ppo/--skip-cache)")
        hours[part] = count / rate / 3600 if count else 0.0
    hours["total"] = sum(hours.values())
    return hours


def print_estimate(summary_path: Path, episodes: float, cache_samples: float, eval_samples: float) -> int:
    try:
        summary = json.loads(summary_path.read_text())
        hours = estimate_hours(summary, episodes, cache_samples, eval_samples)
    except (OSError, ValueError) as err:
        print(f"bench: --estimate: {err}", file=sys.stderr)
        return 2
    s, m = summary.get("settings", {}), summary.get("machine", {})
    where = m.get("gpu") or f"{m.get('cpus')} CPUs"
    print(f"{where}, {summary.get('dtype')}, {s.get('size')} model: train {hours['train']:.2f} h + cache "
          f"{hours['cache']:.2f} h + eval {hours['eval']:.2f} h = {hours['total']:.2f} h")
    return 0
