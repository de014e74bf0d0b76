"""Sweeps: Hydra multirun over objectives × β (BoN taking β too), failed members recorded while the others go on,
one shared reference cache, the experiment preset's grid, the joblib launcher, and the Pareto plot on a real sweep.

The sweeps run through the app in this process (conftest.run_app: Hydra's basic launcher runs the members one after
the other there, as it does in `python -m vbon_exp -m`); the joblib sweep is a real process (its members are)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from analysis_helpers import assert_valid_png, brute_force_frontier
from conftest import run_app, run_cli, shifted
from hydra import compose, initialize_config_dir

from vbon_exp.config import ConfigError, validate
from vbon_exp.threads import usable_cores

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
BETA_3, BETA_7 = "0.3333333333333333", "0.14285714285714285"  # N = 4 and N = 8
# a small synthetic task (3-token responses; what the sweep tests is its bookkeeping, not the numbers): each member's
# exact oracle (a forward pass over every response, twice a run) enumerates 6³ = 216 responses instead of 6⁵ = 7776
FAST = ("task.response_length=3", "train.max_updates=5", "eval.samples_per_prompt=32", "wandb.mode=disabled")


def vbon_exp(*args) -> subprocess.CompletedProcess:
    return run_app(*args)


def sweep_dirs(output_root: Path) -> list[Path]:
    return sorted((output_root / "multirun").glob("*/*"))


def results_lines(sweep: Path) -> list[dict]:
    files = sorted(sweep.glob("*/results.jsonl"), key=lambda p: int(p.parent.name))
    lines = []
    for path in files:
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """3 objectives × 3 β on the synthetic task; bon at β = 0.3 (N = 4.33, not an integer) fails inside run."""
    root = tmp_path_factory.mktemp("sweep")
    result = vbon_exp("-m", "objective=bon,vbon,kl_rl", f"objective.beta={BETA_3},{BETA_7},0.3",
                      f"paths.output_root={root}", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = sweep_dirs(root)
    return root, sweep_dir, result


def test_every_member_has_a_results_line_and_the_failure_is_recorded(sweep):
    _, sweep_dir, result = sweep
    lines = results_lines(sweep_dir)
    assert len(lines) == 9  # one per member: the failed one did not stop the sweep
    failed = [line for line in lines if line["status"] == "failed"]
    assert len(failed) == 1
    (bad,) = failed
    assert (bad["objective"], bad["beta"], bad["task"], bad["seed"]) == ("bon", 0.3, "synthetic", shifted(0))
    assert bad["error_type"] == "ConfigError" and "objective.n must be an integer" in bad["error"]
    assert Path(bad["run_dir"]) == sweep_dir / "2"  # members 0-2: bon × (β₃, β₇, 0.3)
    assert "sweep member failed" in result.stderr + result.stdout
    ok = [line for line in lines if line["status"] == "ok"]
    assert {(p["objective"], round(p["beta"], 6)) for p in ok} == {
        (o, round(float(b), 6)) for o in ("bon", "vbon", "kl_rl") for b in (BETA_3, BETA_7, "0.3")} - {("bon", 0.3)}
    for p in ok:
        assert math.isfinite(p["reward"]) and math.isfinite(p["kl"]) and math.isfinite(p["win_rate"])
    bon = sorted((p for p in ok if p["objective"] == "bon"), key=lambda p: p["n"])
    assert [p["n"] for p in bon] == [4, 8]  # BoN at N = 1/β + 1, set through objective.beta
    assert all("kl_analytic" in p for p in bon)


def test_members_share_the_reference_caches(sweep):
    """Keyed by content: every member (same seed) reads one test cache, the RL members one train cache and the BoN
    members one BoN pool (the split and the purpose are in the key, so no two of them share samples)."""
    root, _, _ = sweep
    caches = list((root / "cache" / "reference").iterdir())
    metas = [json.loads((c / "meta.json").read_text()) for c in caches]
    kinds = sorted((meta["split"], meta.get("purpose", "")) for meta in metas)
    assert kinds == [("test", ""), ("test", "bon_pool"), ("train", "")], caches


def test_pareto_plot_on_the_sweep(sweep, capsys):
    """scripts/pareto_plot.py's main (vbon_exp.analysis.cli.main), in this process; wandb offline (conftest): logged
    too."""
    from vbon_exp.analysis import cli

    _, sweep_dir, _ = sweep
    assert cli.main([str(sweep_dir)]) == 0
    assert "frontier frequency" in capsys.readouterr().out
    out = sweep_dir / "pareto"
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 9  # one row per member
    assert sorted(points["results_file"]) == sorted(f"{k}/results.jsonl" for k in range(9))
    failed = points[points["status"] == "failed"]
    assert failed[["objective", "beta"]].values.tolist() == [["bon", 0.3]] and not failed["on_frontier"].any()
    ok = points[points["status"] == "ok"]
    assert len(ok) == 8
    assert ok["on_frontier"].tolist() == brute_force_frontier(ok["reward"], ok["kl"]).tolist()
    frontier = pd.read_csv(out / "frontier.csv")  # one seed: the seed means are the points
    assert sorted(frontier["results_files"]) == sorted(ok.loc[ok["on_frontier"], "results_file"])
    frequency = pd.read_csv(out / "frontier_frequency.csv").set_index("objective")
    assert frequency["points"].to_dict() == {"bon": 2, "vbon": 3, "kl_rl": 3}
    assert frequency["failed"].to_dict() == {"bon": 1, "vbon": 0, "kl_rl": 0}
    assert (frequency["on_frontier_mean"] * frequency["points"]).sum() == ok["on_frontier"].sum() >= 1
    assert len(pd.read_csv(out / "regret.csv")) == 8  # the synthetic task: exact regrets, the exact frontier drawn
    for stem in ("reward_vs_kl", "win_rate_vs_kl", "exact_vs_kl"):
        assert_valid_png(out / f"{stem}.png")
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (out / "vs_temperature.png").exists()  # one temperature
    assert list((out / "wandb").glob("offline-run-*/files/media/images/reward_vs_kl*.png"))


def test_single_run_keeps_exit_2_for_user_errors(tmp_path):
    result = vbon_exp("objective=bon", "objective.beta=0.3", f"paths.output_root={tmp_path}", "wandb.mode=disabled")
    assert result.returncode == 2
    assert "vbon_exp: error: objective.n must be an integer" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("results.jsonl"))  # no failed line outside a sweep


def test_joblib_launcher_runs_members_in_parallel(tmp_path):
    """2 members in 2 joblib processes, one of which fails: both recorded (~10 s on 2 cores). No $OMP_NUM_THREADS
    from the suite: each member's `threads: auto` shares the cores between the 2 jobs by itself."""
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "objective=bon", "objective.n=4,0",
                     f"paths.output_root={tmp_path}", *FAST, OMP_NUM_THREADS="")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib" in result.stdout + result.stderr
    (sweep_dir,) = sweep_dirs(tmp_path)
    lines = results_lines(sweep_dir)
    assert [(p["n"], p["status"]) for p in lines] == [(4, "ok"), (0, "failed")]
    assert "objective.n must be ≥ 1" in lines[1]["error"]
    assert 1 <= lines[0]["threads"] <= max(1, usable_cores() // 2)


# ------------------------------------------------------------------------------------------------ configs


def compose_config(*overrides, hydra_config=False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


@pytest.mark.parametrize("whole_grid", [pytest.param(False, id="every-objective-and-beta"),
                                        pytest.param(True, id="whole-grid", marks=pytest.mark.slow)])
def test_synthetic_pareto_preset_grid_is_valid_for_every_objective(tmp_path, whole_grid):
    """Each member's config, as the sweep composes it, validates. Fast tier: every objective and every β (16
    compositions, conftest.covering_pairs); slow: all 80 members (a composition costs ~0.15 s)."""
    from conftest import covering_pairs

    cfg = compose_config("+experiment=synthetic_pareto", f"paths.output_root={tmp_path}", hydra_config=True)
    params = cfg.hydra.sweeper.params
    objectives = params["objective"].split(",")
    betas = [float(b) for b in params["objective.beta"].split(",")]
    assert objectives == ["bon", "bon_sft", "vbon", "kl_rl", "dpo", "bonbon", "bond", "bond_iterative",
                          "kl_rl_cdf", "kl_rl_exp_cdf", "kl_rl_log_cdf", "soft_bon", "rejection_bon",
                          "regularised_bon", "best_of_poisson", "bon_aware"] and len(betas) == 5
    members = ([(o, b) for o in objectives for b in betas] if whole_grid else covering_pairs(objectives, betas))
    assert {o for o, _ in members} == set(objectives) and {b for _, b in members} == set(betas)
    for objective, beta in members:  # each member's config, as the sweep composes it
        member = compose_config("+experiment=synthetic_pareto", f"objective={objective}",
                                f"objective.beta={beta!r}", f"paths.output_root={tmp_path}")
        validate(member)
        assert member.objective.beta == beta
        assert member.objective.n == pytest.approx(1 / beta + 1, rel=1e-9)
        if objective in ("bon", "bon_sft", "bonbon", "bond", "bond_iterative"):
            assert isinstance(member.objective.n, int)  # a whole N
        assert member.task.name == "synthetic" and member.wandb.group == "synthetic_pareto"


@pytest.mark.parametrize("objective", ["bon", "bon_sft"])
def test_bon_takes_n_or_beta(make_config, objective):
    default = make_config(f"objective={objective}")
    assert (default.objective.n, default.objective.beta) == (4, pytest.approx(1 / 3))
    by_n = make_config(f"objective={objective}", "objective.n=16")
    assert (by_n.objective.n, by_n.objective.beta) == (16, pytest.approx(1 / 15))
    by_beta = make_config(f"objective={objective}", "objective.beta=0.06666666666666667")
    assert by_beta.objective.n == 16 and isinstance(by_beta.objective.n, int)
    for cfg in (default, by_n, by_beta, make_config(f"objective={objective}", "objective.n=16",
                                                    "objective.beta=0.06666666666666667")):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"objective.n must be an integer.*objective.beta=0.3"):
        validate(make_config(f"objective={objective}", "objective.beta=0.3"))
    with pytest.raises(ConfigError, match="disagree"):
        validate(make_config(f"objective={objective}", "objective.n=16", "objective.beta=0.1"))
