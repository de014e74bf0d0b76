"""vbon_exp/analysis/kl_choices.py: combinations over seeds, the reference choice, and the verdicts."""

import math

import pandas as pd
import pytest

from vbon_exp.analysis.kl_choices import REACH, combinations, summary, verdicts


def _line(algo, kl_in, penalty, seed, to_optimum, target_kl=None, beta=0.5, status="ok"):
    return {"algo": algo, "kl_in": kl_in, "kl_penalty": penalty, "target_kl": target_kl, "beta": beta, "seed": seed,
            "status": status, "exact_kl_to_optimum": to_optimum, "exact_kl_to_optimum_init": 2.0,
            "exact_reward": 1.0, "exact_kl": 1.0, "final_kl_coef": 0.6 if target_kl else math.nan}


def test_verdicts_from_the_share_of_pi_refs_distance_left_in_every_seed():
    """π_ref is 2.0 nats from π* in these lines: ≤ 0.1 left in every seed (5%) reaches π*."""
    lines = []
    for seed in range(3):
        lines += [_line("ppo", "reward", "k1", seed, 0.04), _line("ppo", "loss", "k2", seed, 0.07),
                  _line("ppo", "loss", "k1", seed, 1.0 + 0.01 * seed), _line("ppo", "reward", "k3", seed,
                                                                                 [0.2, 2.0, 0.01][seed]),
                  _line("grpo", "reward", "k1", seed, [0.05, 0.05, 0.3][seed]), _line("grpo", "loss", "k3", seed, 0.6),
                  _line("ppo", "reward", "k1", seed, 0.03, target_kl=1.0)]
    lines.append(_line("ppo", "loss", "k2", 3, math.nan, status="failed"))  # a failed member does not count
    table = verdicts(combinations(pd.DataFrame(lines)))
    verdict = {(r.algo, r.kl_in, r.kl_penalty, r.adaptive): r.verdict for r in table.itertuples()}
    assert verdict[("ppo", "reward", "k1", False)] == "reaches π*"
    assert verdict[("ppo", "loss", "k2", False)] == "reaches π*"  # 0.07 / 2.0 ≤ 5%, ≤ 2 × the reference's 0.04
    assert verdict[("ppo", "loss", "k1", False)] == "elsewhere"  # half left, tight over seeds
    assert verdict[("ppo", "reward", "k3", False)] == "unstable"  # the seeds disagree
    assert verdict[("grpo", "reward", "k1", False)] == "unstable"  # one seed of three is not there: they disagree
    assert verdict[("grpo", "loss", "k3", False)] == "elsewhere"
    assert verdict[("ppo", "reward", "k1", True)] == "reaches π*"
    row = table[(table["algo"] == "ppo") & (table["kl_in"] == "loss") & (table["kl_penalty"] == "k2")].iloc[0]
    assert row["seeds"] == 3 and row["remaining"] == pytest.approx(0.07 / 2.0) and row["reference_kl_to_optimum"] == 0.04
    assert REACH == 0.05 and "| loss | k1 | 0 / 1 | 1 | 0 |" in summary(table)


def test_a_small_share_far_from_what_the_reference_reaches_is_not_pi_star():
    """At a small β π_ref is far from π* (here 20 nats): 0.9 nats left is under 5% of that, but 9× the 0.1 nats the
    reference choice reaches in the same training: elsewhere."""
    lines = []
    for seed in range(3):
        lines += [dict(_line("ppo", "reward", "k1", seed, 0.1), exact_kl_to_optimum_init=20.0),
                  dict(_line("ppo", "loss", "k3", seed, 0.9 + 0.01 * seed), exact_kl_to_optimum_init=20.0)]
    table = verdicts(combinations(pd.DataFrame(lines)))
    assert dict(zip(table["kl_in"], table["verdict"])) == {"reward": "reaches π*", "loss": "elsewhere"}
