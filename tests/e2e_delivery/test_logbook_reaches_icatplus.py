"""E-logbook messages sent through the MetadataManager reach the (mock) ICAT+ REST server.

Each logbook command is one Tango call; what pyicat-plus's mock ICAT+ accepted is compared
with it: type and category, text, proposal, beamline, datasetName, and the API key used.
The key is a secret: it is looked for in everything the device shows or writes.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tango

from tests.e2e_delivery.conftest import (
    BEAMLINE,
    Beamline,
    unique_proposal,
    wait_delivered,
    wait_until,
)
from tests.services.activemq import ActiveMQ
from tests.services.icat_mocks import IcatPlusMock

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()
COMMANDS = {
    # command: (type, category) as ICAT+ receives them from pyicat-plus
    "notifyInfo": ("notification", "info"),
    "notifyDebug": ("notification", "debug"),
    "notifyError": ("notification", "error"),
    "notifyCommand": ("notification", "commandline"),
    "userComment": ("annotation", "comment"),
}


@pytest.fixture
def proposal(e2e: Beamline) -> Iterator[str]:
    name = unique_proposal("lb")
    e2e.meta.write_attribute("proposal", name)
    e2e.meta.write_attribute("sample", "lysozyme")
    yield name
    e2e.meta.write_attribute("proposal", "")


def by_text(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["content"][0]["text"]: m for m in messages if m.get("content")}


def test_each_logbook_command_arrives_with_its_category_and_dataset(
    e2e: Beamline, icatplus_mock: IcatPlusMock, proposal: str
) -> None:
    manager = e2e.manager
    manager.write_attribute("datasetName", "lyso_0007")
    for command in COMMANDS:
        manager.command_inout(command, f"{command} from {proposal}\nsecond line")
    received = by_text(icatplus_mock.collect(len(COMMANDS), timeout=30))
    assert len(received) == len(COMMANDS)
    for command, (kind, category) in COMMANDS.items():
        message = received[f"{command} from {proposal}\nsecond line"]
        assert (message["type"], message["category"]) == (kind, category), command
        assert message["investigation"] == proposal
        assert message["instrument"] == BEAMLINE
        assert message["datasetName"] == "lyso_0007"
        assert message["content"] == [
            {"format": "plainText", "text": f"{command} from {proposal}\nsecond line"}
        ]
        assert message["software"] and message["machine"] and message["creationDate"]
        assert message["apikey"] == icatplus_mock.api_key
    wait_delivered(manager)
    assert manager.read_attribute("lastDeliveryError").value == ""


def test_message_without_a_dataset_has_no_dataset_name(
    e2e: Beamline, icatplus_mock: IcatPlusMock, proposal: str
) -> None:
    assert e2e.manager.read_attribute("datasetName").value == ""
    e2e.manager.command_inout("notifyInfo", f"no dataset for {proposal}")
    [message] = icatplus_mock.collect(1, timeout=30)
    assert message["content"][0]["text"] == f"no dataset for {proposal}"
    assert message["investigation"] == proposal
    assert "datasetName" not in message


def test_running_dataset_name_goes_with_the_message(
    e2e: Beamline, icatplus_mock: IcatPlusMock, proposal: str
) -> None:
    manager = e2e.manager
    manager.write_attribute("datasetName", "lyso_running")
    manager.command_inout("StartDataset")
    manager.command_inout("notifyCommand", "ascan sx 0 1 10 0.1")
    manager.command_inout("EndDataset")
    [message] = icatplus_mock.collect(1, timeout=30)
    assert (message["category"], message["datasetName"]) == ("commandline", "lyso_running")


def test_uploaded_image_arrives_as_sent(
    e2e: Beamline, icatplus_mock: IcatPlusMock, proposal: str
) -> None:
    data_url = f"data:image/png;base64,{PNG}"
    e2e.manager.command_inout("uploadBase64", data_url)
    [message] = icatplus_mock.collect(1, timeout=30)
    assert message["base64"] == data_url
    assert message["investigation"] == proposal
    assert message["instrument"] == BEAMLINE
    assert message["apikey"] == icatplus_mock.api_key


def test_bad_image_is_refused_and_nothing_is_sent(
    e2e: Beamline, icatplus_mock: IcatPlusMock, proposal: str
) -> None:
    before = e2e.manager.read_attribute("undeliveredCount").value
    with pytest.raises(tango.DevFailed) as refused:
        e2e.manager.command_inout("uploadBase64", "data:image/png;base64,not base64!")
    assert refused.value.args[0].reason == "ICAT_InvalidInput"
    assert "not valid base64" in refused.value.args[0].desc
    assert e2e.manager.read_attribute("undeliveredCount").value == before
    assert icatplus_mock.collect(1, timeout=1.5) == []


# -- the API key ---------------------------------------------------------------------


def everything_shown(device: tango.DeviceProxy) -> list[str]:
    """Status and the value of every readable attribute, as text."""
    shown = [device.status()]
    for name in device.get_attribute_list():
        try:
            shown.append(f"{name}={device.read_attribute(name).value!r}")
        except tango.DevFailed as error:
            shown.append(f"{name} failed: {error.args[0].desc}")
    return shown


def refusals(calls: list[Callable[[], object]]) -> list[str]:
    texts: list[str] = []
    for call in calls:
        try:
            call()
        except tango.DevFailed as error:
            texts.extend(f"{e.reason} {e.desc} {e.origin}" for e in error.args)
        else:
            raise AssertionError(f"{call} was expected to fail")
    return texts


def test_api_key_is_never_shown_logged_or_stored(
    beamline_factory: Callable[..., Beamline],
    activemq: ActiveMQ,
    icatplus_mock: IcatPlusMock,
) -> None:
    """Its own beamline: a message ICAT+ refuses for good stays set aside for the session."""
    key = icatplus_mock.api_key
    beamline = beamline_factory(
        "e2ekey",
        queue_urls=[activemq.url],
        queue="/queue/e2e.key",
        icatplus=icatplus_mock,
        options=("-v4",),
    )
    meta, manager = beamline.meta, beamline.manager
    # a proposal the mock ICAT+ refuses (400): the error text names the URL
    meta.write_attribute("proposal", "ihr666")
    manager.command_inout("notifyInfo", "refused by ICAT+")
    wait_until(lambda: manager.read_attribute("setAsideCount").value == 1, 30, "the refusal")
    error = manager.read_attribute("lastDeliveryError").value
    assert "answered 400" in error and "/dataacquisition/***/notification" in error
    wait_until(  # Status is refreshed once a second
        lambda: "1 logbook message refused by ICAT+ and set aside" in manager.status(),
        5,
        "Status to tell about the refusal",
    )
    shown = everything_shown(manager) + everything_shown(meta)
    texts = refusals(
        [
            lambda: manager.command_inout("uploadBase64", "data:image/png;base64,@@@"),
            lambda: manager.command_inout("EndDataset"),
            lambda: manager.command_inout("Reset"),
            lambda: manager.command_inout("SetParameters", '{"NoSuchParameter": 1}'),
            lambda: manager.write_attribute("lastDataFile", "/data/x.h5"),
        ]
    )
    # then a message that goes through
    meta.write_attribute("proposal", unique_proposal("lb"))
    manager.command_inout("notifyError", "accepted by ICAT+")
    wait_delivered(manager)
    shown += everything_shown(manager)
    assert len(icatplus_mock.collect(1, timeout=30)) == 1
    logs = (beamline.manager_server.log.read_text(), beamline.meta_server.log.read_text())
    assert "/dataacquisition/***/" in logs[0]  # the refusal was logged, masked
    stored = [
        path.read_bytes() for path in Path(beamline.state, "outbox").rglob("*") if path.is_file()
    ]
    assert any(b"refused by ICAT+" in data for data in stored)  # the set-aside row
    assert len(texts) >= 5
    for text in [*shown, *texts, *logs]:
        assert key not in text
    for data in stored:
        assert key.encode() not in data
    with sqlite3.connect(beamline.outbox_path() / "outbox.sqlite3") as db:
        [(reason,)] = db.execute("SELECT error FROM set_aside").fetchall()
    assert "answered 400" in reason and key not in reason
