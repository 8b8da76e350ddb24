"""tango-metadata's installed base, switched without edits: its commands and attributes,
Init from Jive or Astor in every state, and kill -9 of either server in every state
followed at once, with no wait and no retry, by the calls of a session (SPEC "Processes
and start-up": once both devices answer a ping, a write reaches the other before it
returns)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import tango

from tests.e2e.conftest import MANAGER, META, OFF, ON, RUNNING, STANDBY, Beamline
from tests.services.servers import Server, register

pytestmark = pytest.mark.slow

STATES = [OFF, STANDBY, ON, RUNNING]
ROUNDS = 20


def reach(beamline: Beamline, state: tango.DevState, n: int) -> None:
    """A session in `state`, with the names of round `n`."""
    beamline.open_session(f"hg{n}", f"s{n}", f"/data/visitor/hg{n}")
    if state == OFF:
        beamline.meta.write_attribute("proposal", "")
    elif state in (ON, RUNNING):
        beamline.manager.write_attribute("datasetName", f"d{n}")
    if state == RUNNING:
        beamline.manager.command_inout("StartDataset")
        beamline.manager.write_attribute("lastDataFile", f"/data/visitor/hg{n}/f.h5")
    assert beamline.manager.state() == state, beamline.describe()


def a_session_at_once(beamline: Beamline, n: int) -> None:
    """Right after a restart: the experiment written and a dataset named, no wait."""
    beamline.open_session(f"hg{n}b", f"s{n}b", f"/data/visitor/hg{n}b")
    beamline.manager.write_attribute("datasetName", f"d{n}b")
    assert beamline.manager.state() == ON, beamline.describe()
    assert beamline.manager.proposal == f"hg{n}b"
    assert beamline.manager.sampleName == f"s{n}b"


@pytest.mark.parametrize("server", ["MetaExperiment", "MetadataManager"])
def test_kill_either_server_in_every_state_then_a_session_at_once(
    beamline: Beamline, server: str
) -> None:
    for n in range(ROUNDS):
        state = STATES[n % len(STATES)]
        reach(beamline, state, n)
        mark = beamline.mark()
        process = beamline.meta_server if server == "MetaExperiment" else beamline.manager_server
        process.kill()
        process.start()  # returns once its devices answer a ping
        if server == "MetadataManager":
            assert beamline.manager.state() == state, f"round {n}: {beamline.describe()}"
        a_session_at_once(beamline, n)
        registered = beamline.datasets_since(mark)
        if state == RUNNING:  # the new proposal ended it: registered once, whole
            assert [(d.name, d.files) for d in registered] == [
                (f"d{n}", (f"/data/visitor/hg{n}/f.h5",))
            ], f"round {n}"
        else:
            assert registered == [], f"round {n}"


def init(device: tango.DeviceProxy) -> None:
    device.command_inout("Init")


@pytest.mark.parametrize("state", STATES, ids=str)
def test_init_keeps_the_state_and_the_next_call_is_served_at_once(
    beamline: Beamline, state: tango.DevState
) -> None:
    reach(beamline, state, 1)
    before = beamline.snapshot()
    init(beamline.manager)
    assert beamline.snapshot() == before
    init(beamline.meta)
    assert beamline.snapshot() == before
    mark = beamline.mark()
    if state == OFF:
        beamline.meta.write_attribute("proposal", "hg2")
        assert beamline.manager.state() == STANDBY
    elif state == STANDBY:
        beamline.manager.write_attribute("datasetName", "d2")
        assert beamline.manager.state() == ON
    elif state == ON:
        beamline.manager.command_inout("StartDataset")
        assert beamline.manager.state() == RUNNING
    else:
        assert beamline.manager.lastDataFile == "/data/visitor/hg1/f.h5"
        beamline.manager.command_inout("EndDataset")
        assert beamline.manager.state() == STANDBY
        assert [d.files for d in beamline.datasets_since(mark)] == [("/data/visitor/hg1/f.h5",)]


@pytest.mark.parametrize(
    "command", ["StartDataset", "datasetName", "SetParameters", "notifyInfo", "sample"]
)
def test_init_followed_at_once_by_each_call(beamline: Beamline, command: str) -> None:
    reach(beamline, ON, 3)
    for device in (beamline.manager, beamline.meta):
        init(device)
        sample = f"s_after_init_of_{device.name()}"
        if command == "StartDataset":
            beamline.manager.command_inout("StartDataset")
            assert beamline.manager.state() == RUNNING
            beamline.manager.command_inout("AbortDataset")
            beamline.manager.write_attribute("datasetName", "d3")
        elif command == "datasetName":
            beamline.manager.write_attribute("datasetName", "other")
            assert beamline.manager.read_attribute("datasetName").value == "other"
        elif command == "SetParameters":
            beamline.manager.command_inout("SetParameters", json.dumps({"Sample_notes": "x"}))
            assert beamline.manager.read_attribute("Sample_notes").value == "x"
        elif command == "notifyInfo":
            beamline.manager.command_inout("notifyInfo", "after Init")
        else:
            beamline.meta.write_attribute("sample", sample)
            assert beamline.manager.sampleName == sample
            assert beamline.manager.state() == STANDBY
            beamline.manager.write_attribute("datasetName", "d3")
        assert beamline.manager.state() == ON, beamline.describe()


def test_name_init_start_init_end_registers_once_and_clears_the_name(beamline: Beamline) -> None:
    """The data error of the drop-in issue: five tries, each must end STANDBY with ""."""
    for n in range(5):
        beamline.open_session(f"hg7{n}", "s", "/data/visitor")
        beamline.manager.write_attribute("datasetName", f"once{n}")
        mark = beamline.mark()
        init(beamline.manager)
        beamline.manager.command_inout("StartDataset")
        init(beamline.manager)
        beamline.manager.command_inout("EndDataset")
        assert beamline.manager.state() == STANDBY, beamline.describe()
        assert beamline.manager.read_attribute("datasetName").value == ""
        with pytest.raises(tango.DevFailed, match="not named"):
            beamline.manager.command_inout("StartDataset")
        assert [d.name for d in beamline.datasets_since(mark)] == [f"once{n}"]


def test_abort_scan_registers_an_incomplete_dataset(beamline: Beamline) -> None:
    reach(beamline, RUNNING, 4)
    mark = beamline.mark()
    beamline.manager.command_inout("AbortScan")
    assert beamline.manager.state() == STANDBY
    [dataset] = beamline.datasets_since(mark)
    assert (dataset.name, dataset.complete) == ("d4", "false")


def test_the_dataset_parent_location(beamline: Beamline) -> None:
    manager = beamline.manager
    reach(beamline, ON, 5)
    pattern_folder = manager.dataFolder
    assert manager.command_inout("getDatasetParentLocation") == ""
    manager.command_inout("setDatasetParentLocation", "/data/visitor/{proposal}/{beamlineID}/raw")
    assert manager.dataFolder == "/data/visitor/hg5/id00/raw/d5"
    assert manager.command_inout("getDatasetParentLocation") == (
        "/data/visitor/{proposal}/{beamlineID}/raw"
    )
    with pytest.raises(tango.DevFailed, match="neither an absolute path nor a pattern"):
        manager.command_inout("setDatasetParentLocation", "relative")
    beamline.manager_server.kill()
    beamline.manager_server.start()
    assert manager.command_inout("getDatasetParentLocation") == (
        "/data/visitor/{proposal}/{beamlineID}/raw"
    )
    mark = beamline.mark()
    manager.command_inout("StartDataset")
    with pytest.raises(tango.DevFailed, match="already fixed"):
        manager.command_inout("setDatasetParentLocation", "/elsewhere")
    with pytest.raises(tango.DevFailed, match="already fixed"):
        manager.command_inout("clearDatasetParentLocation")
    manager.command_inout("EndDataset")
    [dataset] = beamline.datasets_since(mark)
    assert dataset.location == "/data/visitor/hg5/id00/raw/d5"
    manager.command_inout("clearDatasetParentLocation")
    manager.write_attribute("datasetName", "d5")
    assert manager.dataFolder == pattern_folder


def test_message_list_tells_state_changes_and_registrations(beamline: Beamline) -> None:
    reach(beamline, RUNNING, 6)
    beamline.manager.command_inout("EndDataset")
    messages = list(beamline.manager.messageList)
    assert 0 < len(messages) <= 100
    assert any("RUNNING" in line for line in messages), messages
    assert "stored for ICAT" in messages[-1] or "STANDBY" in messages[-1], messages
    assert any("dataset 'd6' stored for ICAT" in line for line in messages), messages
    assert all(line[:4].isdigit() and "T" in line[:20] for line in messages), "each has a time"


def test_status_names_an_unreachable_meta_experiment_while_running(beamline: Beamline) -> None:
    reach(beamline, RUNNING, 8)
    beamline.meta_server.kill()
    beamline.manager_server.kill()
    beamline.manager_server.start()
    assert beamline.manager.state() == RUNNING
    status = beamline.manager.status()
    assert f"MetaExperiment {META} cannot be reached" in status, status
    assert beamline.manager.lastDataFile == "/data/visitor/hg8/f.h5"
    beamline.meta_server.start()
    beamline.manager.command_inout("EndDataset")
    assert beamline.manager.state() == STANDBY
    assert MANAGER in beamline.meta.followers


def test_a_misspelt_meta_experiment_is_named_as_not_defined(
    beamline: Beamline, tmp_path: Path
) -> None:
    typo = "id00/metadata/typo"
    register(
        beamline.tango_host,
        "MetadataManager/typo",
        "MetadataManager",
        {typo: {"beamlineID": ["id00"], "metaExperimentDevice": ["id00/metaexp/tset"]}},
    )
    server = Server(
        "MetadataManager",
        "typo",
        beamline.tango_host,
        tmp_path / "typo.log",
        [typo],
        {"ICAT_SERVERS_STATE": str(tmp_path)},
    )
    server.start()
    try:
        device = beamline.proxy(typo)
        assert device.state() == OFF
        assert "id00/metaexp/tset is not defined in the Tango database" in device.status()
    finally:
        server.kill()


ORIGINAL_PATTERN = "{dataRoot}/{proposal}/{beamlineID}/{sampleName}/{scanName}"
"""The example of tango-metadata's README."""


def test_the_original_configuration_is_read_as_written(
    beamline_factory: Callable[..., Beamline], tmp_path: Path
) -> None:
    """tango-metadata's README: `{scanName}`, `beamlineId`, `globalHDFfiles` and the ICAT
    reader's class properties; a secret in a file of the server's user only."""
    key = tmp_path / "api_key"
    key.write_text("elogbook-0000-secret-never-shown\n")
    key.chmod(0o600)
    line = beamline_factory(
        "tmconfig",
        start=False,
        pattern=ORIGINAL_PATTERN,
        manager_properties={
            "globalHDFfiles": ["{dataRoot}/{proposal}/{beamlineID}/{proposal}-{beamlineID}.h5"],
            "API_KEY_FILE": [str(key)],
        },
        class_properties={
            "MetadataManager": {"server": ["icat.example"], "port": ["443"], "username": ["r"]}
        },
    )
    database = tango.Database()
    for name in (line.meta_name, line.manager_name):
        database.delete_device_property(name, ["beamlineID"])
        database.put_device_property(name, {"beamlineId": ["id29"]})
    line.start()
    status = line.manager.status()
    for name in ("globalHDFfiles", "server", "port", "username"):
        assert name in status, status
    assert f"e-logbook API key from file {key}" in status, status
    assert "secret-never-shown" not in status
    line.open_session("hg29", "crystal", "/data/visitor")
    line.manager.write_attribute("datasetName", "scan_0001")
    assert line.manager.dataFolder == "/data/visitor/hg29/id29/crystal/scan_0001"
    mark = line.mark()
    line.manager.command_inout("StartDataset")
    line.manager.command_inout("EndDataset")
    [dataset] = line.datasets_since(mark)
    assert (dataset.beamline, dataset.location) == (
        "id29",
        "/data/visitor/hg29/id29/crystal/scan_0001",
    )
