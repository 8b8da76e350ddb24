"""`icat-servers up` brings a newcomer's stack up, again without duplicates; `down` stops
exactly what up started."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tango

from tests.embedded.conftest import MANAGER, META, alive, icat_servers, recorded


def exported_tango_host(stdout: str) -> str:
    match = re.fullmatch(r"export TANGO_HOST=(127\.0\.0\.1:\d+)\n", stdout)
    assert match, f"up printed {stdout!r} on stdout, not one export line"
    return match.group(1)


@pytest.mark.slow
def test_up_down_and_up_again(state_dir: Path) -> None:
    first = icat_servers(state_dir, "up")
    assert first.returncode == 0, first.stderr
    tango_host = exported_tango_host(first.stdout)
    assert "icat-servers down" in first.stderr
    started = recorded(state_dir)
    assert set(started) == {"database", "MetaExperiment/icatservers", "MetadataManager/icatservers"}
    assert all(alive(p["pid"]) for p in started.values())
    meta = tango.DeviceProxy(f"tango://{tango_host}/{META}")
    manager = tango.DeviceProxy(f"tango://{tango_host}/{MANAGER}")
    meta.proposal = "hg123"
    assert manager.proposal == "hg123"

    again = icat_servers(state_dir, "up")
    assert again.returncode == 0, again.stderr
    assert exported_tango_host(again.stdout) == tango_host
    assert recorded(state_dir) == started, "a second up started something again"
    assert "registered" in again.stderr and ": 0 change(s)" in again.stderr
    assert meta.proposal == "hg123"

    down = icat_servers(state_dir, "down")
    assert down.returncode == 0, down.stderr
    for name, process in started.items():
        assert not alive(process["pid"]), f"{name} still runs after down"
    assert not (state_dir / "up.json").exists()
    assert icat_servers(state_dir, "down").stdout.startswith("nothing to stop")
    assert icat_servers(state_dir, "database", "status").returncode == 3

    third = icat_servers(state_dir, "up")
    assert third.returncode == 0, third.stderr
    assert exported_tango_host(third.stdout) == tango_host, "the database moved to a new port"
    assert {p["pid"] for p in recorded(state_dir).values()}.isdisjoint(
        p["pid"] for p in started.values()
    )
    assert tango.DeviceProxy(f"tango://{tango_host}/{META}").proposal == "hg123"


@pytest.mark.slow
def test_down_leaves_running_what_up_found_running(state_dir: Path) -> None:
    database = icat_servers(state_dir, "database", "start")
    assert database.returncode == 0, database.stderr
    up = icat_servers(state_dir, "up")
    assert up.returncode == 0, up.stderr
    assert "the embedded Tango database runs" in up.stderr
    assert "database" not in recorded(state_dir)
    servers = recorded(state_dir)

    down = icat_servers(state_dir, "down")
    assert down.returncode == 0, down.stderr
    assert all(not alive(p["pid"]) for p in servers.values())
    status = icat_servers(state_dir, "database", "status")
    assert status.returncode == 0, "down stopped a database up did not start"
    assert database.stdout.strip().removeprefix("TANGO_HOST=") in status.stdout


def test_up_refuses_a_wrong_file_and_starts_nothing(state_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("- class: MetadataManager\n  properties:\n    queueNmae: x\n")
    refused = icat_servers(state_dir, "up", str(wrong))
    assert refused.returncode == 2
    assert "Did you mean 'queueName'?" in refused.stderr
    assert refused.stdout == ""
    assert not state_dir.exists()
