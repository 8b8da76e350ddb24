"""Datasets registered through the Tango devices reach the (mock) ICAT with everything.

The path under test is the whole one: Tango call -> MetadataManager -> outbox -> STOMP ->
ActiveMQ -> pyicat-plus's mock ingester -> its IcatDb. What the ingester parsed and what
its database recorded are compared with what the client told the devices.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tango
from pyicat_plus_pytest_plugin.servers.icat_db import IcatDb

from tests.e2e_delivery.conftest import (
    BEAMLINE,
    Beamline,
    parameter_values,
    unique_proposal,
    wait_delivered,
    wait_until,
)
from tests.services.icat_mocks import IcatIngesterMock


@dataclass
class Session:
    """A proposal opened on the e2e beamline, its investigation already in the mock ICAT."""

    beamline: Beamline
    ingester: IcatIngesterMock
    proposal: str
    investigation: dict[str, Any]
    data_root: Path

    def datasets(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The next `count` dataset messages of this proposal the ingester parsed."""
        received = self.ingester.collect(count, timeout)
        return [
            message
            for message in received
            if isinstance(message, dict) and message.get("investigation") == self.proposal
        ]

    def recorded(self) -> list[dict[str, Any]]:
        """What the mock ICAT's database holds for this proposal's investigation."""
        recorded: list[dict[str, Any]] = IcatDb(self.ingester.data_dir).get_datasets(
            self.investigation["id"]
        )
        return recorded


@pytest.fixture
def session(e2e: Beamline, icat_ingester: IcatIngesterMock, tmp_path: Path) -> Iterator[Session]:
    proposal = unique_proposal()
    data_root = tmp_path / "data"
    data_root.mkdir()
    meta = e2e.meta
    meta.write_attribute("proposal", proposal)
    [message] = [
        m
        for m in icat_ingester.collect(1, timeout=30)
        if isinstance(m, dict) and m.get("experiment") == proposal
    ]
    assert message["instrument"] == BEAMLINE
    assert message["startDate"]
    [investigation] = IcatDb(icat_ingester.data_dir).get_investigations(BEAMLINE, proposal)
    meta.write_attribute("dataRoot", str(data_root))
    meta.write_attribute("sample", "lysozyme")
    assert e2e.manager.state() == tango.DevState.STANDBY
    yield Session(e2e, icat_ingester, proposal, investigation, data_root)
    meta.write_attribute("proposal", "")


def assert_healthy(manager: tango.DeviceProxy) -> None:
    wait_delivered(manager)
    values = {
        a.name: a.value
        for a in manager.read_attributes(
            ["undeliveredCount", "brokerConnected", "lastDeliveryError", "setAsideCount"]
        )
    }
    assert values == {
        "undeliveredCount": 0,
        "brokerConnected": True,
        "lastDeliveryError": "",
        "setAsideCount": 0,
    }
    wait_until(  # Status is refreshed once a second
        lambda: "all messages delivered" in manager.status(), 5, "Status to say so"
    )


def test_proposal_write_registers_the_investigation(session: Session) -> None:
    investigation = session.investigation
    assert investigation["proposal"] == investigation["experiment"] == session.proposal
    assert investigation["instrument"]["name"] == BEAMLINE
    assert investigation["startDate"]
    assert_healthy(session.beamline.manager)


def test_ended_dataset_arrives_with_everything_the_client_gave(session: Session) -> None:
    manager = session.beamline.manager
    manager.write_attribute("datasetName", "lyso_0001")
    assert manager.state() == tango.DevState.ON
    manager.command_inout("StartDataset")
    folder = manager.read_attribute("dataFolder").value
    assert folder == f"{session.data_root}/{session.proposal}/{BEAMLINE}/lysozyme/lyso_0001"
    manager.command_inout(
        "SetParameters",
        json.dumps({"Sample_description": "tetragonal crystal", "scanType": "ascan"}),
    )
    manager.write_attribute("InstrumentSlitPrimary_horizontal_gap", "0.25")
    files = [f"{folder}/scan{i:04d}.h5" for i in range(5)]
    for path in files:
        manager.write_attribute("lastDataFile", path)
    assert list(manager.read_attribute("datafileList").value) == files
    manager.command_inout("EndDataset")
    assert manager.state() == tango.DevState.STANDBY
    assert manager.read_attribute("datasetName").value == ""

    [dataset] = session.datasets(1)
    assert dataset["name"] == "lyso_0001"
    assert dataset["instrument"] == BEAMLINE
    assert dataset["location"] == folder
    assert dataset["sample"]["name"] == "lysozyme"
    assert dataset["complete"] is True
    assert [f["location"] for f in dataset["datafile"]] == files
    values = parameter_values(dataset)
    assert values["Sample_description"] == "tetragonal crystal"
    assert values["scanType"] == "ascan"
    assert values["InstrumentSlitPrimary_horizontal_gap"] == "0.25"
    assert values["Sample_name"] == "lysozyme"
    assert dataset["startDate"] < dataset["endDate"]

    [recorded] = session.recorded()
    assert recorded["name"] == "lyso_0001"
    assert recorded["location"] == folder
    assert recorded["instrument"] == BEAMLINE
    assert recorded["sample"]["name"] == "lysozyme"
    assert [f["location"] for f in recorded["datafile"]] == files
    assert recorded["investigation"] == {
        "name": session.proposal,
        "id": session.investigation["id"],
    }
    stored = parameter_values(recorded)
    assert stored["Sample_description"] == "tetragonal crystal"
    assert stored["InstrumentSlitPrimary_horizontal_gap"] == "0.25"
    assert_healthy(manager)


def test_aborted_dataset_is_registered_incomplete(session: Session) -> None:
    manager = session.beamline.manager
    manager.write_attribute("datasetName", "lyso_aborted")
    manager.command_inout("StartDataset")
    manager.write_attribute("lastDataFile", "/data/partial.h5")
    manager.command_inout("AbortDataset")
    assert manager.state() == tango.DevState.STANDBY
    [dataset] = session.datasets(1)
    assert dataset["name"] == "lyso_aborted"
    assert dataset["complete"] is False
    assert parameter_values(dataset)["complete"] == "false"
    assert [f["location"] for f in dataset["datafile"]] == ["/data/partial.h5"]
    assert [r["name"] for r in session.recorded()] == ["lyso_aborted"]
    assert_healthy(manager)


def test_sample_change_while_running_registers_the_running_dataset(session: Session) -> None:
    beamline = session.beamline
    manager = beamline.manager
    manager.write_attribute("datasetName", "lyso_interrupted")
    manager.command_inout("StartDataset")
    manager.command_inout("SetParameters", json.dumps({"Sample_description": "before"}))
    beamline.meta.write_attribute("sample", "insulin")
    assert manager.state() == tango.DevState.STANDBY
    assert manager.read_attribute("sampleName").value == "insulin"
    assert manager.read_attribute("datasetName").value == ""
    [dataset] = session.datasets(1)
    assert dataset["name"] == "lyso_interrupted"
    assert dataset["sample"]["name"] == "lysozyme"  # the sample it was measured on
    assert dataset["complete"] is True
    assert parameter_values(dataset)["Sample_description"] == "before"
    # the next dataset is on the new sample
    manager.write_attribute("datasetName", "insulin_0001")
    manager.command_inout("StartDataset")
    manager.command_inout("EndDataset")
    [after] = session.datasets(1)
    assert (after["name"], after["sample"]["name"]) == ("insulin_0001", "insulin")
    assert sorted(r["name"] for r in session.recorded()) == ["insulin_0001", "lyso_interrupted"]
    assert_healthy(manager)


def test_many_datasets_each_arrive_once(session: Session) -> None:
    manager = session.beamline.manager
    names = [f"series_{i:04d}" for i in range(30)]
    for name in names:
        manager.write_attribute("datasetName", name)
        manager.command_inout("StartDataset")
        manager.write_attribute("lastDataFile", f"/data/{name}.h5")
        manager.command_inout("EndDataset")
    received = session.datasets(len(names), timeout=60)
    assert [d["name"] for d in received] == names
    assert sorted(r["name"] for r in session.recorded()) == names
    assert_healthy(manager)


def test_mxcube_aliases_register_the_dataset(session: Session) -> None:
    """MXCuBE writes scanName and calls StartScan/EndScan; the dataset is the same."""
    manager = session.beamline.manager
    manager.write_attribute("scanName", "mx_0001")
    assert manager.read_attribute("datasetName").value == "mx_0001"
    manager.command_inout("StartScan")
    manager.write_attribute("lastDataFile", "/data/mx_0001/image_00001.cbf")
    manager.command_inout("EndScan")
    assert manager.read_attribute("scanName").value == ""
    [dataset] = session.datasets(1)
    assert (dataset["name"], dataset["complete"]) == ("mx_0001", True)
    assert [f["location"] for f in dataset["datafile"]] == ["/data/mx_0001/image_00001.cbf"]
    assert [r["name"] for r in session.recorded()] == ["mx_0001"]
