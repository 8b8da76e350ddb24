"""`icat-servers status` over a Tango database of its own: all well, then a device FAULT,
one that cannot be reached and one with messages older than its alarm level."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from icat_servers.adapters.embedded_db import EmbeddedDatabase
from icat_servers.adapters.operator_cli import DeviceStatus, line
from tests.e2e_delivery.conftest import wait_until
from tests.operators.conftest import CLI, icat_servers
from tests.services.activemq import ActiveMQ, free_port
from tests.services.servers import Server

pytestmark = pytest.mark.slow

META = "id02/metaexp/st"
OLD = "id02/metadata/old"
BROKEN = "id02/metadata/broken"
GONE = "id02/metadata/gone"


@pytest.fixture(scope="module")
def own_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database with only this module's devices, so that "all is well" can be true."""
    database = EmbeddedDatabase(tmp_path_factory.mktemp("status_db"))
    host = database.start()
    try:
        yield host
    finally:
        database.stop()


def add(
    database: tango.Database, server: str, device: str, properties: dict[str, list[str]]
) -> None:
    info = tango.DbDevInfo()
    info.name, info._class, info.server = device, server.split("/")[0], server
    database.add_device(info)
    database.put_device_property(device, properties)


def server(host: str, executable: str, instance: str, devices: list[str], state: Path) -> Server:
    return Server(
        executable,
        instance,
        host,
        state / f"{executable}-{instance}.log",
        devices,
        {"ICAT_SERVERS_STATE": str(state), "ICAT_SERVERS_INGESTER_PERIOD": "0.5"},
    )


def status(host: str, *options: str) -> tuple[int, dict[str, str]]:
    """Exit code, and each device's line."""
    done = icat_servers(["status", *options], host)
    assert "\x1b[" not in done.stdout  # no colour without a terminal
    lines = {}
    for text in done.stdout.splitlines():
        device = text.split()[1]
        lines[device] = text
    return done.returncode, lines


def test_status_lines_and_exit_codes(own_db: str, activemq: ActiveMQ, tmp_path: Path) -> None:
    name, port = own_db.rsplit(":", 1)
    database = tango.Database(name, int(port))
    dead = f"http://127.0.0.1:{free_port()}"
    common = {"beamlineID": ["id02"], "queueURLs": [activemq.url], "queueName": ["/queue/op.st"]}
    manager = {
        **common,
        "metaExperimentDevice": [META],
        "icatplus_server": [dead],
        "API_KEY": ["status-test-key"],
    }
    add(database, "MetaExperiment/opst", META, common)
    add(database, "MetadataManager/opst", OLD, manager)
    database.put_device_attribute_property(OLD, {"oldestUndeliveredAge": {"max_alarm": ["2"]}})
    servers = [
        server(own_db, "MetaExperiment", "opst", [META], tmp_path),
        server(own_db, "MetadataManager", "opst", [OLD], tmp_path),
    ]
    try:
        for one in servers:
            one.start()
        meta = tango.DeviceProxy(f"tango://{own_db}/{META}")
        old = tango.DeviceProxy(f"tango://{own_db}/{OLD}")
        wait_until(lambda: old.read_attribute("brokerConnected").value, 30, "the broker link")
        meta.write_attribute("proposal", "st1234")
        wait_until(lambda: meta.read_attribute("waitingInBroker").value == 1, 30, "the browse")

        code, lines = status(own_db)
        assert code == 0, lines
        assert sorted(lines) == sorted([META, OLD])
        assert lines[META].startswith("ok   id02/metaexp/st ")
        assert f"0 waiting | 0 set aside | broker {activemq.url} connected" in lines[OLD]
        assert " | ingester: 1 in queue | " in lines[META]  # its investigation, unconsumed

        old.command_inout("notifyInfo", "ICAT+ is down")  # waits: nothing answers there
        add(database, "MetadataManager/opbroken", BROKEN, {**manager, "parameters": ["NoSuch"]})
        add(database, "MetadataManager/opgone", GONE, manager)  # never started
        broken = server(own_db, "MetadataManager", "opbroken", [BROKEN], tmp_path)
        servers.append(broken)
        broken.start()
        time.sleep(2.5)  # older than OLD's alarm level (2 s)

        code, lines = status(own_db)
        assert code == 1
        assert sorted(lines) == sorted([BROKEN, GONE, META, OLD])
        assert lines[META].startswith("ok   ")
        assert lines[OLD].startswith("FAIL id02/metadata/old ")
        assert "| 1 waiting, oldest " in lines[OLD] and "ICAT+ is down" not in lines[OLD]
        assert lines[BROKEN].split()[:3] == ["FAIL", BROKEN, "FAULT"]
        assert "NoSuch" in lines[BROKEN]  # the first Status line names the problem
        assert lines[GONE].split()[:3] == ["FAIL", GONE, "UNREACHABLE"]
        assert (
            "| cannot be reached | not running: start its server MetadataManager/opgone"
            in (lines[GONE])
        )

        done = icat_servers(["status", "--json"], own_db)
        assert done.returncode == 1
        seen = {o["device"]: o for o in map(json.loads, done.stdout.splitlines())}
        assert seen[OLD]["alarm_age"] == 2.0 and seen[META]["alarm_age"] == 600.0
        assert seen[OLD]["problems"][0].startswith("oldest waiting ")
        assert seen[BROKEN]["problems"] == ["FAULT"]
        assert seen[GONE]["problems"] == ["cannot be reached"]
        assert [seen[d]["ok"] for d in (META, OLD, BROKEN, GONE)] == [True, False, False, False]
        assert "status-test-key" not in done.stdout

        watching = subprocess.Popen(
            [str(CLI), "status", "--watch", "--interval", "0.5"],
            env={**os.environ, "TANGO_HOST": own_db},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            rounds = [watching.stdout.readline() for _ in range(8)] if watching.stdout else []
        finally:
            watching.kill()
            watching.wait()
        assert [t.split()[1] for t in rounds].count(META) == 2  # refreshed: two rounds of four
    finally:
        for one in servers:
            one.kill()


def test_a_fault_is_red_on_a_terminal() -> None:
    seen = DeviceStatus(BROKEN, "MetadataManager", state="FAULT", problems=["FAULT"])
    assert "\x1b[31m" in line(seen, 20, colours=True)
    assert "\x1b[" not in line(seen, 20, colours=False)
