"""Evaluation: every policy kind measures itself behind one interface (`EvaluatedPolicy`, vbon_exp/evaluation/
policy.py) — a model trained here or elsewhere (`ModelPolicy`), BoN by sampling (`BoNPolicy`), BoN for every N from a
pool of cached π_ref rewards (`PooledBoN`), the inference-time relatives of BoN (vbon_exp/objectives/) — and
`evaluate_policy` (runner.py) runs it at each evaluation temperature, writing the results lines' metrics and the
samples behind them (samples.parquet)."""

from vbon_exp.evaluation.bon_pool import BON_POOL, PooledBoN
from vbon_exp.evaluation.bon_sampled import BoNPolicy
from vbon_exp.evaluation.judges import build_judges, judge_metrics
from vbon_exp.evaluation.model import ModelPolicy
from vbon_exp.evaluation.policy import EvalContext, EvaluatedPolicy, PolicyPoint
from vbon_exp.evaluation.runner import EvalConfig, StageMeter, Target, bon_target_distance, evaluate_policy, measure
from vbon_exp.evaluation.sampled import SampledPolicy
from vbon_exp.evaluation.statistics import stratified_mean_se

__all__ = ["BON_POOL", "BoNPolicy", "EvalConfig", "EvalContext", "EvaluatedPolicy", "ModelPolicy", "PolicyPoint",
           "PooledBoN", "SampledPolicy", "StageMeter", "Target", "bon_target_distance", "build_judges",
           "evaluate_policy", "judge_metrics", "measure", "stratified_mean_se"]
