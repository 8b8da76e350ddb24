"""The demo, run beside a user's own embedded stack, touches only its own things."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest
import tango

from icat_servers.adapters.embedded_db import EmbeddedDatabase
from tests.embedded.conftest import (
    BIN,
    MANAGER,
    META,
    REPO,
    alive,
    environment,
    icat_servers,
    recorded,
    stop_everything,
)
from tests.registration.conftest import snapshot

pytestmark = pytest.mark.slow


def demo(state: Path, tango_host: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`icat-servers demo` with the user's TANGO_HOST exported: the demo must not use it."""
    return subprocess.run(
        [str(BIN / "icat-servers"), "demo", *args],
        env=environment(state, TANGO_HOST=tango_host),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=REPO,
    )


def on_the_queue(output: str) -> list[str]:
    """The dataset lines of the demo's read-back of its broker's queue."""
    tail = output.split("Where the datasets went:", 1)[1].split("stopping the demo", 1)[0]
    return re.findall(r"dataset (lysozyme_\d{4}) \(complete=true, 2 files\)", tail)


def test_the_demo_leaves_a_users_running_stack_unchanged_and_reachable(state_dir: Path) -> None:
    up = icat_servers(state_dir, "up")
    assert up.returncode == 0, up.stderr
    tango_host = up.stdout.strip().removeprefix("export TANGO_HOST=")
    users = recorded(state_dir)
    meta = tango.DeviceProxy(f"tango://{tango_host}/{META}")
    manager = tango.DeviceProxy(f"tango://{tango_host}/{MANAGER}")
    meta.proposal = "user1"
    meta.sample = "users_sample"
    manager.datasetName = "users_dataset"
    db = tango.Database(*tango_host.split(":"))
    before = snapshot(db)
    demo_dir = state_dir / "demo"
    try:
        ran = demo(state_dir, tango_host)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"/{dt.date.today():%Y%m%d}'" in ran.stdout, "the session is not dated today"
        assert on_the_queue(ran.stdout) == ["lysozyme_0001", "lysozyme_0002"]
        assert "configures no ICAT+" in ran.stdout

        assert recorded(state_dir) == users
        assert all(alive(p["pid"]) for p in users.values())
        assert snapshot(db) == before, "the demo registered something in the user's database"
        assert (meta.proposal, meta.sample) == ("user1", "users_sample")
        assert manager.datasetName == "users_dataset"
        assert manager.state() == tango.DevState.ON
        assert not (demo_dir / "up.json").exists(), "the demo left processes running"
        assert EmbeddedDatabase(demo_dir).status() is None

        kept = demo(state_dir, tango_host, "--keep")
        assert kept.returncode == 0, kept.stdout + kept.stderr
        assert on_the_queue(kept.stdout) == ["lysozyme_0001", "lysozyme_0002"] * 2
        fresh = demo(state_dir, tango_host)
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert on_the_queue(fresh.stdout) == ["lysozyme_0001", "lysozyme_0002"]
        assert manager.datasetName == "users_dataset"
    finally:
        stop_everything(demo_dir)
