"""Both device servers as real processes, wired to a real ActiveMQ and pyicat-plus's mocks.

A dataset or logbook message is followed from the Tango call that produced it to the
receiver that recorded it: the mock ICAT ingester (and its IcatDb) behind ActiveMQ, the
mock ICAT+ REST server. Devices and servers are this folder's own (`id01/.../<tag>`,
`MetaExperiment/<tag>`), registered with device properties only, so that nothing another
test folder registers can change them. Every process is started here and killed by PID.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tango

from tests.services.icat_mocks import INGEST_QUEUE, IcatIngesterMock, IcatPlusMock
from tests.services.servers import Server, register

BEAMLINE = "id01"
TECHNIQUE = ("Sample_description", "InstrumentSlitPrimary_horizontal_gap")
PATTERN = "{dataRoot}/{proposal}/{beamlineID}/{sampleName}/{datasetName}"


@dataclass
class Beamline:
    """One MetaExperiment and one MetadataManager following it, each in its own server."""

    tag: str
    meta_name: str
    manager_name: str
    meta_server: Server
    manager_server: Server
    state: Path
    queue: str
    outbox_root: Path

    @property
    def meta(self) -> tango.DeviceProxy:
        return tango.DeviceProxy(self.meta_name)

    @property
    def manager(self) -> tango.DeviceProxy:
        return tango.DeviceProxy(self.manager_name)

    @property
    def outbox(self) -> Path:
        """The MetadataManager's outbox directory (where its sqlite file lives)."""
        return self.outbox_root / "outbox" / self.manager_name.replace("/", "_")

    def start(self) -> None:
        self.meta_server.start()
        self.manager_server.start()
        wait_until(lambda: self.manager_name in (self.meta.followers or ()), 30, "the link")

    def stop(self) -> None:
        self.manager_server.kill()
        self.meta_server.kill()


def start_beamline(
    tango_host: str,
    tag: str,
    state: Path,
    *,
    queue_urls: Sequence[str],
    queue: str,
    icatplus: IcatPlusMock | None,
    manager_properties: Mapping[str, Sequence[str]] | None = None,
    options: Sequence[str] = (),
    start: bool = True,
) -> Beamline:
    """Register the pair `id01/metaexp/<tag>` + `id01/metadata/<tag>` and start it."""
    meta_name, manager_name = f"{BEAMLINE}/metaexp/{tag}", f"{BEAMLINE}/metadata/{tag}"
    delivery = {
        "queueURLs": list(queue_urls),
        "queueName": [queue],
        "icatplus_server": [icatplus.base_url if icatplus else "http://127.0.0.1:9"],
        "API_KEY": [icatplus.api_key if icatplus else "unused-key"],
        "jolokiaPort": ["0"],
    }
    register(
        tango_host,
        f"MetaExperiment/{tag}",
        "MetaExperiment",
        {meta_name: {"beamlineID": [BEAMLINE], **delivery}},
    )
    register(
        tango_host,
        f"MetadataManager/{tag}",
        "MetadataManager",
        {
            manager_name: {
                "beamlineID": [BEAMLINE],
                "metaExperimentDevice": [meta_name],
                "dataFolderPattern": [PATTERN],
                "parameters": list(TECHNIQUE),
                **delivery,
                **(manager_properties or {}),
            }
        },
    )
    state.mkdir(parents=True, exist_ok=True)
    environment = {"ICAT_SERVERS_STATE": str(state), "PYTHONUNBUFFERED": "1"}
    beamline = Beamline(
        tag,
        meta_name,
        manager_name,
        Server(
            "MetaExperiment",
            tag,
            tango_host,
            state / "meta.log",
            [meta_name],
            environment,
            options=options,
        ),
        Server(
            "MetadataManager",
            tag,
            tango_host,
            state / "manager.log",
            [manager_name],
            environment,
            options=options,
        ),
        state,
        queue,
        state,
    )
    if start:
        beamline.start()
    return beamline


@pytest.fixture(scope="session")
def e2e(
    tango_db: str,
    session_icat_ingester: IcatIngesterMock,
    session_icatplus_mock: IcatPlusMock,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Beamline]:
    """The beamline of the happy-path tests: session ActiveMQ, mock ingester, mock ICAT+.

    Servers run with `-v4` so that their log file holds all they can say (the API key
    test greps it).
    """
    beamline = start_beamline(
        tango_db,
        "e2e",
        tmp_path_factory.mktemp("e2e_state"),
        queue_urls=[session_icat_ingester.broker.url],
        queue=INGEST_QUEUE,
        icatplus=session_icatplus_mock,
        options=("-v4",),
        start=False,
    )
    try:
        beamline.start()
        yield beamline
    finally:
        beamline.stop()


@pytest.fixture
def beamline_factory(
    tango_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Beamline]]:
    """Beamlines of their own (fault tests); every one is killed by PID at the end."""
    made: list[Beamline] = []

    def make(tag: str, start: bool = True, **kwargs: object) -> Beamline:
        state = kwargs.pop("state", None) or tmp_path_factory.mktemp(f"{tag}_state")
        beamline = start_beamline(tango_db, tag, state, start=False, **kwargs)  # type: ignore[arg-type]
        made.append(beamline)  # before starting: a failed start is cleaned up too
        if start:
            beamline.start()
        return beamline

    try:
        yield make
    finally:
        for beamline in made:
            beamline.stop()


# -- helpers the tests share -------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll `predicate`; returns the seconds it took, fails the test on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def unique_proposal(prefix: str = "ma") -> str:
    """A proposal name no earlier test used (the mocks refuse names containing 666)."""
    while True:
        name = f"{prefix}{uuid.uuid4().int % 10**7:07d}"
        if "666" not in name:
            return name


def wait_delivered(manager: tango.DeviceProxy, timeout: float = 30.0) -> float:
    return wait_until(
        lambda: manager.read_attribute("undeliveredCount").value == 0,
        timeout,
        f"{manager.name()} to deliver everything (undeliveredCount 0)",
    )


def parameter_values(dataset: Mapping[str, object]) -> dict[str, str]:
    """A parsed dataset message's parameters as name -> value."""
    items: Any = dataset.get("parameter") or dataset.get("parameters") or []
    return {str(p["name"]): str(p["value"]) for p in items}
