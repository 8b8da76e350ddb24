"""The fixtures of every test folder, and hypothesis profiles.

Real services, each started once per session and stopped by PID (tests/services/ holds
the code; see tests/services/beamline.py for the beamline API):

- `tango_db`: TANGO_HOST ("127.0.0.1:PORT") of a pytango-db Tango database.
- `beamlines`: makes MetaExperiment + MetadataManager pairs, registered with their
  properties and started as processes; `beamline_factory`: the same, killed after the test.
- `activemq`, `activemq_factory`: Apache ActiveMQ brokers.
- `icat_ingester`, `icatplus_mock`: pyicat-plus's mock ICAT ingester and ICAT+ server.

Nothing here imports tango, stomp or pyicat-plus until a fixture that needs them runs, so
the chart and core tests (tests/unit) run with python-statemachine, icat-esrf-definitions,
pytest and hypothesis alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from tests.services.activemq import ActiveMQ
    from tests.services.beamline import Beamline, Beamlines
    from tests.services.icat_mocks import IcatIngesterMock, IcatPlusMock

# CI replays the same examples on every run, so that a landing never hangs on a lucky draw;
# a developer's run explores new ones (and keeps what failed in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# -- Tango database and device servers ---------------------------------------------------


@pytest.fixture(scope="session")
def tango_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TANGO_HOST ("127.0.0.1:PORT") of a fresh pytango-db database, stopped by PID at the end.

    It is started through `EmbeddedDatabase`, so the fixture exercises the same start/stop
    code as the `icat-servers database` command. TANGO_HOST is yielded, not exported:
    `beamlines` exports it for the tests that use servers.
    """
    from icat_servers.adapters.embedded_db import EmbeddedDatabase

    database = EmbeddedDatabase(tmp_path_factory.mktemp("tango_db"))
    tango_host = database.start()
    running = database.status()
    assert running is not None, f"pytango-db did not answer; see {database.log_file}"
    try:
        yield tango_host
    finally:
        stopped = database.stop()
        assert stopped == running.pid, f"pytango-db (pid {running.pid}) was not running at the end"


@pytest.fixture(scope="session")
def beamlines(tango_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Beamlines]:
    """Makes beamlines (tests/services/beamline.py) that may outlive a test.

    `beamlines.make(tag, **options)` registers `id01/metaexp/<tag>` + `id01/metadata/<tag>`
    and starts both servers; a package fixture calls `stop()` on it when done. Every server
    still running at the end of the session is killed by PID. TANGO_HOST is set to the
    session database meanwhile, so `tango.DeviceProxy("a/b/c")` finds the devices.
    """
    from tests.services.beamline import Beamlines

    previous = os.environ.get("TANGO_HOST")
    os.environ["TANGO_HOST"] = tango_db
    made = Beamlines(tango_db, tmp_path_factory)
    try:
        yield made
    finally:
        made.stop_all()
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous


@pytest.fixture
def beamline_factory(beamlines: Beamlines) -> Iterator[Callable[..., Beamline]]:
    """`beamline_factory(tag, **options)`: `beamlines.make`; all it made die after the test."""
    made: list[Beamline] = []

    def make(tag: str, start: bool = True, **options: Any) -> Beamline:
        beamline = beamlines.make(tag, start=False, **options)
        made.append(beamline)  # before starting: a failed start is cleaned up too
        if start:
            beamline.start()
        return beamline

    try:
        yield make
    finally:
        for beamline in made:
            beamline.stop()
            beamlines.remove_class_properties(beamline)


# -- ActiveMQ and pyicat-plus's mocks -------------------------------------------------------


@pytest.fixture(scope="session")
def activemq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveMQ]:
    """One ActiveMQ broker on a free loopback port for the whole session.

    Tests that kill a broker use `activemq_factory` instead, so that this one stays up.
    """
    from tests.services.activemq import ActiveMQ, free_port

    broker = ActiveMQ(tmp_path_factory.mktemp("activemq"), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def activemq_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], ActiveMQ]]:
    """Make and start extra brokers: `activemq_factory()` returns a started ActiveMQ.

    Every broker it made is killed (by PID) at the end of the test.
    """
    from tests.services.activemq import ActiveMQ, free_port

    brokers: list[ActiveMQ] = []

    def make() -> ActiveMQ:
        broker = ActiveMQ(tmp_path_factory.mktemp("activemq"), free_port())
        brokers.append(broker)
        broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.kill()


@pytest.fixture(scope="session")
def icat_mock_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the mock ingester and the mock ICAT+ keep their records."""
    return tmp_path_factory.mktemp("icat_mock_db")


@pytest.fixture(scope="session")
def session_icat_ingester(
    activemq: ActiveMQ, icat_mock_data_dir: Path
) -> Iterator[IcatIngesterMock]:
    """pyicat-plus's mock ICAT ingester on /queue/icatIngest of the session broker."""
    from tests.services.icat_mocks import running_icat_ingester

    with running_icat_ingester(activemq, icat_mock_data_dir) as ingester:
        yield ingester


@pytest.fixture
def icat_ingester(session_icat_ingester: IcatIngesterMock) -> IcatIngesterMock:
    """The mock ingester, with what earlier tests sent it flushed away."""
    session_icat_ingester.flush()
    return session_icat_ingester


@pytest.fixture(scope="session")
def session_icatplus_mock(icat_mock_data_dir: Path) -> Iterator[IcatPlusMock]:
    """pyicat-plus's mock ICAT+ REST server."""
    from tests.services.icat_mocks import running_icatplus_mock

    with running_icatplus_mock(icat_mock_data_dir) as mock:
        yield mock


@pytest.fixture
def icatplus_mock(session_icatplus_mock: IcatPlusMock) -> IcatPlusMock:
    """The mock ICAT+ server, with what earlier tests sent it flushed away."""
    session_icatplus_mock.flush()
    return session_icatplus_mock
