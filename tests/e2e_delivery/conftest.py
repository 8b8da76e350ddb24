"""Both device servers as real processes, wired to a real ActiveMQ and pyicat-plus's mocks.

A dataset or logbook message is followed from the Tango call that produced it to the
receiver that recorded it: the mock ICAT ingester (and its IcatDb) behind ActiveMQ, the
mock ICAT+ REST server. Devices and servers are this folder's own (`id01/.../<tag>`,
`MetaExperiment/<tag>`), registered with device properties only, so that nothing another
test folder registers can change them. Every process is started by the fixtures of
tests/conftest.py (`beamlines`, `beamline_factory`) and killed by PID.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import tango

from tests.services.beamline import INGEST_QUEUE, TECHNIQUE, Beamline, Beamlines, wait_for
from tests.services.icat_mocks import IcatIngesterMock, IcatPlusMock

__all__ = ["BEAMLINE", "Beamline", "parameter_values", "unique_proposal", "wait_delivered"]

BEAMLINE = "id01"


@pytest.fixture(scope="package")
def e2e(
    beamlines: Beamlines,
    session_icat_ingester: IcatIngesterMock,
    session_icatplus_mock: IcatPlusMock,
) -> Iterator[Beamline]:
    """The beamline of the happy-path tests: session ActiveMQ, mock ingester, mock ICAT+.

    Servers run with `-v4` so that their log file holds all they can say (the API key
    test greps it).
    """
    line = beamlines.make(
        "e2e",
        beamline_id=BEAMLINE,
        parameters=TECHNIQUE,
        queue_urls=[session_icat_ingester.broker.url],
        queue=INGEST_QUEUE,
        icatplus=session_icatplus_mock,
        options=("-v4",),
    )
    try:
        yield line
    finally:
        line.stop()


# -- helpers the tests share -------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll `predicate`; returns the seconds it took, fails the test on timeout."""
    return wait_for(predicate, timeout, what)


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
