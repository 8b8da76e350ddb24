"""The embedded database stops and starts again on its port while the servers run: the
servers and their clients carry on with the same TANGO_HOST."""

from __future__ import annotations

from pathlib import Path

import pytest
import tango

from tests.embedded.conftest import MANAGER, META, alive, icat_servers, recorded

pytestmark = pytest.mark.slow


def test_database_stop_and_start_on_the_same_port_while_servers_run(state_dir: Path) -> None:
    up = icat_servers(state_dir, "up")
    assert up.returncode == 0, up.stderr
    tango_host = up.stdout.strip().removeprefix("export TANGO_HOST=")
    servers = {k: v for k, v in recorded(state_dir).items() if k != "database"}
    meta = tango.DeviceProxy(f"tango://{tango_host}/{META}")
    meta.proposal = "before"

    stopped = icat_servers(state_dir, "database", "stop")
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped"), stopped.stdout
    started = icat_servers(state_dir, "database", "start")  # at once: no wait for TIME_WAIT
    assert started.returncode == 0, started.stderr
    assert started.stdout == f"TANGO_HOST={tango_host}\n"
    again = icat_servers(state_dir, "database", "start")
    assert again.stdout == started.stdout
    assert "already runs" in again.stderr

    assert all(alive(p["pid"]) for p in servers.values())
    # a client that connects now finds the devices through the restarted database
    fresh_meta = tango.DeviceProxy(f"tango://{tango_host}/{META}")
    manager = tango.DeviceProxy(f"tango://{tango_host}/{MANAGER}")
    fresh_meta.proposal = "after"
    assert manager.proposal == "after"
    assert meta.proposal == "after"  # the proxy made before the restart too
    # the MetaExperiment memorizes in the restarted database
    db = tango.Database(*tango_host.split(":"))
    memorized = db.get_device_attribute_property(META, ["proposal"])["proposal"]
    assert list(memorized["__value"]) == ["after"]
