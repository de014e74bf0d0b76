"""vbon_exp/analysis/gold_vs_proxy.py on hand-made results lines whose answers are known by hand: the gold share is
(judge win rate − ½)/(proxy win rate − ½) per seed, averaged; a method keeping clearly less of its gain than BoN
ever keeps is flagged; BoN's own rows and rows without a proxy gain are not."""

from __future__ import annotations

import math

import pytest
from analysis_helpers import frame

from vbon_exp.analysis.gold_vs_proxy import format_gold_vs_proxy, gold_share
from vbon_exp.analysis.tables import frontier_tables


def line(objective, beta, seed, win, gold_win, **extra) -> dict:
    return {"objective": objective, "beta": beta, "n": 1 / beta + 1, "seed": seed, "kl": 0.5, "reward": win,
            "win_rate": win, "judge/gold/win_rate": gold_win, "judge/gold/reward": gold_win, **extra}


def table(*rows):
    return frontier_tables(frame(*rows))["gold_vs_proxy"].set_index(["objective", "beta"])


def test_shares_by_hand_and_the_flag():
    out = table(
        line("bon", 1 / 3, 0, 0.80, 0.74, variant="drawn"), line("bon", 1 / 3, 1, 0.80, 0.71, variant="drawn"),
        line("vbon", 1 / 3, 0, 0.70, 0.66), line("vbon", 1 / 3, 1, 0.70, 0.64),  # shares 0.8, 0.7: as BoN keeps
        line("kl_rl", 1 / 3, 0, 0.90, 0.54), line("kl_rl", 1 / 3, 1, 0.90, 0.58),  # 0.1, 0.2: proxy up, gold flat
        line("dpo", 1 / 3, 0, 0.505, 0.60), line("dpo", 1 / 3, 1, 0.505, 0.40))  # no proxy gain: no share
    bon, vbon, kl_rl = (out.loc[(name, 1 / 3)] for name in ("bon[drawn]", "vbon", "kl_rl"))
    assert bon["gold_share"] == pytest.approx((0.8 + 0.7) / 2) and bon["over_optimises_gold"] == "bon"
    assert vbon["gold_share"] == pytest.approx(0.75) and vbon["over_optimises_gold"] == ""
    assert vbon["gold_share_se"] == pytest.approx(0.05)  # std (ddof 1) of 0.8, 0.7 over √2
    assert kl_rl["gold_share"] == pytest.approx(0.15) and kl_rl["over_optimises_gold"] == "yes"
    dpo = out.loc[("dpo", 1 / 3)]
    assert math.isnan(dpo["gold_share"]) and dpo["over_optimises_gold"] == "-"
    assert "kl_rl" in format_gold_vs_proxy(out.reset_index()) and "gold share" in format_gold_vs_proxy(out.reset_index())


def test_a_share_within_two_se_of_bons_lowest_is_not_flagged():
    out = table(line("bon", 1 / 3, 0, 0.80, 0.74, variant="drawn"),
                line("vbon", 1 / 3, 0, 0.70, 0.62), line("vbon", 1 / 3, 1, 0.70, 0.70))  # 0.6 and 1.0: SE 0.2
    assert out.loc[("vbon", 1 / 3), "over_optimises_gold"] == ""


def test_no_judges_no_table():
    assert len(frontier_tables(frame({"objective": "vbon", "beta": 0.5, "kl": 0.1, "reward": 1.0,
                                      "win_rate": 0.6}))["gold_vs_proxy"]) == 0


def test_gold_share_is_nan_without_a_proxy_gain():
    import pandas as pd

    shares = gold_share(pd.Series([0.7, 0.6]), pd.Series([0.9, 0.505]))
    assert shares.iloc[0] == pytest.approx(0.5) and math.isnan(shares.iloc[1])


def test_rows_no_judge_scored_are_left_out_and_the_flags_still_line_up():
    """BoN from the pool (no samples, no judge columns) leads the seed means; the rows after it keep their flags."""
    out = table({"objective": "bon", "estimate": "cache", "beta": 1 / 3, "n": 4, "seed": 0, "kl": 0.64,
                 "kl_analytic": 0.64, "reward": 0.8, "win_rate": 0.8},
                line("bon", 1 / 3, 0, 0.80, 0.74, variant="drawn"), line("kl_rl", 1 / 3, 0, 0.90, 0.54))
    assert list(out.index.get_level_values("objective")) == ["bon[drawn]", "kl_rl"]
    assert out["over_optimises_gold"].tolist() == ["bon", "yes"]


def test_a_small_gain_within_its_own_noise_gets_no_share_and_noisy_shares_no_flag():
    noisy = {"win_rate_se": 0.02, "judge/gold/win_rate_se": 0.02}
    out = table(line("bon", 1 / 3, 0, 0.80, 0.74, variant="drawn"),
                line("kl_rl", 1 / 3, 0, 0.53, 0.50, **noisy),  # gain 0.03 < 2 SE: no share
                line("vbon", 1 / 3, 0, 0.60, 0.55, **noisy))  # share 0.5, SE ≈ √(0.02² + 0.5²·0.02²)/0.1 ≈ 0.22
    assert math.isnan(out.loc[("kl_rl", 1 / 3), "gold_share"])
    vbon = out.loc[("vbon", 1 / 3)]
    assert vbon["gold_share"] == pytest.approx(0.5) and vbon["gold_share_se"] == pytest.approx(0.2236, abs=1e-3)
    assert vbon["over_optimises_gold"] == ""  # 0.5 is within 2 SE of BoN's 0.8
