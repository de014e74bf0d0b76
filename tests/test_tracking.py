"""vbon_exp/tracking.py: wandb mode resolution (never needing a server), results.jsonl, no leaked secrets."""

from __future__ import annotations

import json
import os

import pytest

from vbon_exp import tracking
from vbon_exp.tracking import Tracker, resolve_wandb_mode

FAKE_KEY = "vbonfakekey0123456789abcdef0123456789abcd"  # 40 characters, like a real wandb key


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No wandb key or mode in the environment, and HOME/NETRC pointing at an empty directory."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_auto_mode_is_offline_without_a_key(clean_env):
    assert not tracking.wandb_api_key_configured()
    assert resolve_wandb_mode(None) == "offline"


def test_auto_mode_is_online_with_an_api_key(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_wandb_mode(None) == "online"  # resolution only: no wandb run is started here


def test_auto_mode_is_online_with_a_netrc_entry(clean_env, monkeypatch, tmp_path):
    (clean_env / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password x\n")
    assert resolve_wandb_mode(None) == "online"
    other = tmp_path / "other-netrc"
    other.write_text("machine example.com\n  login a\n  password b\n")
    monkeypatch.setenv("NETRC", str(other))  # NETRC takes precedence over ~/.netrc
    assert resolve_wandb_mode(None) == "offline"


@pytest.mark.parametrize("env_mode", ["offline", "disabled", "online"])
def test_wandb_mode_env_is_respected(clean_env, monkeypatch, env_mode):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_wandb_mode(None) == env_mode


def test_explicit_mode_wins_and_dryrun_is_offline(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode("disabled") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    assert resolve_wandb_mode("dryrun") == "offline"


def test_bad_mode_raises_naming_the_key(clean_env):
    with pytest.raises(ValueError, match="wandb.mode"):
        resolve_wandb_mode("sometimes")


def test_disabled_tracker_still_writes_results(tmp_path):
    tr = Tracker(tmp_path / "run", {"a": 1}, mode="disabled", project="vbon_exp-test")
    assert tr.run is None and tr.wandb_dir is None
    tr.log({"x": 1.0})
    tr.write_point({"reward": 1.0, "status": "ok"})
    tr.finish()
    assert json.loads((tmp_path / "run" / "results.jsonl").read_text()) == {"reward": 1.0, "status": "ok"}
    assert not (tmp_path / "run" / "wandb").exists()


def test_offline_tracker_writes_wandb_dir_and_results_and_never_the_api_key(tmp_path, monkeypatch):
    """A fake API key in the environment must not reach results.jsonl or any file wandb writes."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    run_dir = tmp_path / "run"
    config = {"task": {"name": "synthetic"}, "seed": 0, "wandb": {"mode": "offline"}}
    tr = Tracker(run_dir, config, mode="offline", project="vbon_exp-test", name="t", tags=["a"])
    try:
        assert tr.mode == "offline"
        tr.log({"train/loss": 0.5, "note": "text is skipped"}, step=1)
        tr.write_point({"task": "synthetic", "reward": 1.25, "kl": 0.5, "status": "ok", "flag": True})
    finally:
        tr.finish()
    assert tr.run is None
    wandb_dir = run_dir / "wandb"
    assert wandb_dir.is_dir()
    assert tr.wandb_dir is not None and os.path.commonpath([tr.wandb_dir, str(wandb_dir)]) == str(wandb_dir)
    assert list(wandb_dir.glob("offline-run-*/run-*.wandb"))  # an offline run file, syncable later
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["reward"] == 1.25
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked, leaked
