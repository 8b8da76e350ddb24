"""The servers' log, as Tango shows it: `-vN` levels, the device in every line, no secret."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tango

from icat_servers.adapters.activemq import free_port
from tests.services.activemq import ActiveMQ
from tests.services.servers import Server, register
from tests.tango_citizen.conftest import REFUSAL, wait_until

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` skips them

META = "id00/metaexp/logs"
MANAGER = "id00/metadata/logs"
API_KEY = "logbook-key-5ecret-4711"
PASSCODE = "broker-pass-5ecret-0815"
LINE = re.compile(
    r"^\S+ (?P<level>DEBUG|INFO|WARN|ERROR|FATAL) \(\S+\) (?P<device>\S+) (?P<text>.*)$"
)


@dataclass
class Lines:
    """The console of a server started with some `-vN`: Tango's lines, parsed."""

    text: str

    def ours(self, phrase: str) -> list[tuple[str, str, str]]:
        """(level, device, text) of every Tango line containing `phrase`."""
        found = []
        for line in self.text.splitlines():
            match = LINE.match(line)
            if match and phrase in match["text"]:
                found.append((match["level"], match["device"], match["text"]))
        return found


@dataclass
class Setup:
    tango_host: str
    broker: ActiveMQ
    closed_port: int
    state: Path


@pytest.fixture(scope="module")
def setup(
    tango_db: str,
    activemq: ActiveMQ,
    refusing_icatplus: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    """A MetaExperiment with an open proposal, and the manager's properties, secrets and all."""
    state = tmp_path_factory.mktemp("logs")
    closed = free_port()
    register(tango_db, "MetaExperiment/logs", "MetaExperiment", {META: {"beamlineID": ["id00"]}})
    register(
        tango_db,
        "MetadataManager/logs",
        "MetadataManager",
        {
            MANAGER: {
                "beamlineID": ["id00"],
                "metaExperimentDevice": [META],
                "queueURLs": [f"127.0.0.1:{closed}", f"127.0.0.1:{activemq.port}"],
                "queueName": ["/queue/loggingTest"],
                "queueLogin": ["icat"],
                "queuePasscode": [PASSCODE],
                "icatplus_server": [refusing_icatplus],
                "API_KEY": [API_KEY],
            }
        },
    )
    meta = Server(
        "MetaExperiment",
        "logs",
        tango_db,
        state / "meta.log",
        [META],
        {"ICAT_SERVERS_STATE": str(state)},
    )
    meta.start()
    try:
        proxy = tango.DeviceProxy(META)
        proxy.proposal = "hg125"
        proxy.sample = "quartz"
        yield Setup(tango_db, activemq, closed, state)
    finally:
        meta.kill()


def session(setup: Setup, level: str) -> Lines:
    """The manager started with `level`, one dataset registered, one logbook message refused."""
    log = setup.state / f"manager{level or '-none'}.log"
    manager = Server(
        "MetadataManager",
        "logs",
        setup.tango_host,
        log,
        [MANAGER],
        {"ICAT_SERVERS_STATE": str(setup.state)},
        options=[level] if level else [],
    )
    manager.start()
    try:
        proxy = tango.DeviceProxy(MANAGER)
        wait_until(lambda: proxy.state() == tango.DevState.STANDBY, what="STANDBY")
        proxy.datasetName = f"scan{level or '0'}"
        proxy.StartDataset()
        proxy.EndDataset()
        proxy.notifyInfo("to be refused")
        wait_until(lambda: proxy.undeliveredCount == 0, what="everything delivered")
        wait_until(lambda: proxy.setAsideCount >= 1, what="the refusal set aside")
        if level:
            wait_until(lambda: "confirmed" in log.read_text(errors="replace"), what="confirmed")
        return Lines(log.read_text(errors="replace"))
    finally:
        manager.kill()


def test_nothing_of_ours_on_the_console_without_a_level(setup: Setup) -> None:
    lines = session(setup, "")

    assert lines.ours("configuration read") == []
    assert lines.ours("stored in the outbox") == []


@pytest.mark.parametrize("level", ["-v1", "-v2", "-v3", "-v4", "-v5"])
def test_what_an_operator_needs_is_logged_each_line_naming_the_device(
    setup: Setup, level: str
) -> None:
    lines = session(setup, level)
    dataset = f"scan{level}"
    broker = f"127.0.0.1:{setup.broker.port}"

    configuration = lines.ours("configuration read")
    stored = lines.ours(f"dataset {dataset!r} stored in the outbox as message ")
    confirmed = lines.ours(f"broker {broker} confirmed message")
    expected = {
        "configuration": configuration,
        "stored": stored,
        "connected": lines.ours(f"connected to broker {broker}"),
        "failover": lines.ours(f"broker 127.0.0.1:{setup.closed_port} refused the connection"),
        "confirmed": confirmed,
        "set aside": lines.ours(f"answered 400 Bad Request: {REFUSAL}"),
    }
    for what, found in expected.items():
        assert found, f"no {what} line at {level}"
        assert {device for _, device, _ in found} == {MANAGER}, f"{what}: {found}"
    assert "API_KEY=(set, not shown)" in configuration[0][2]
    assert "queuePasscode=(set, not shown)" in configuration[0][2]
    message_id = stored[0][2].rsplit(" ", 1)[1]
    assert any(f"{message_id} (dataset {dataset!r})" in text for _, _, text in confirmed)
    assert {level for level, _, _ in expected["set aside"]} == {"ERROR"}
    assert {level for level, _, _ in expected["failover"]} == {"WARN"}

    debug = lines.ours("connecting to broker")
    if level in ("-v1", "-v2"):
        assert debug == []  # -v1 and -v2 are INFO in Tango, -v3 to -v5 DEBUG
    else:
        assert debug and {device for _, device, _ in debug} == {MANAGER}

    assert API_KEY not in lines.text
    assert PASSCODE not in lines.text


def test_a_logging_target_added_at_run_time_receives_the_devices_lines(
    setup: Setup, tmp_path: Path
) -> None:
    """What LogViewer and Astor do: raise the level and add a target on the admin device."""
    target = tmp_path / "manager-target.log"
    manager = Server(
        "MetadataManager",
        "logs",
        setup.tango_host,
        setup.state / "manager-target-console.log",
        [MANAGER],
        {"ICAT_SERVERS_STATE": str(setup.state)},
    )
    manager.start()
    try:
        admin = tango.DeviceProxy("dserver/MetadataManager/logs")
        admin.SetLoggingLevel([[5], [MANAGER]])
        admin.AddLoggingTarget([MANAGER, f"file::{target}"])
        proxy = tango.DeviceProxy(MANAGER)
        wait_until(lambda: proxy.state() == tango.DevState.STANDBY, what="STANDBY")
        proxy.datasetName = "scan-target"
        proxy.StartDataset()
        proxy.EndDataset()
        wait_until(
            lambda: target.exists() and "confirmed message" in target.read_text(errors="replace"),
            what="the confirmation in the file target",
        )
        text = target.read_text(errors="replace")
        # log4j XML, as LogViewer reads it
        assert "<![CDATA[dataset 'scan-target' stored in the outbox as message " in text
        assert f'logger="{MANAGER}"' in text
        assert API_KEY not in text and PASSCODE not in text
    finally:
        manager.kill()
