"""kill -9 of the MetadataManager while a dataset runs: after restart it runs on, whole."""

from __future__ import annotations

import json

import tango

from icat_servers.icatcore.outbox import Channel, Kind
from tests.devices.conftest import MANAGER, META, Beamline
from tests.devices.tango_session import wait_for


def test_a_running_dataset_survives_a_crash_of_its_server(beamline: Beamline) -> None:
    meta = tango.DeviceProxy(META)
    manager = tango.DeviceProxy(MANAGER)
    wait_for(lambda: MANAGER in (meta.followers or ()))
    meta.proposal = ""
    meta.proposal = "hg123"
    meta.sample = "lysozyme"
    manager.datasetName = "crash_0001"
    manager.StartDataset()
    manager.SetParameters(json.dumps({"Sample_description": "before the crash"}))
    manager.lastDataFile = "/data/visitor/hg123/id00/crash_0001/f1.h5"
    manager.lastDataFile = "/data/visitor/hg123/id00/crash_0001/f1b.h5"
    manager.SetParameters(json.dumps({"InstrumentSlitPrimary_horizontal_gap": "0.5"}))
    outbox = beamline.outbox()
    before = outbox.count(Channel.ICAT, Kind.DATASET)

    beamline.manager_server.restart()
    manager = tango.DeviceProxy(MANAGER)
    wait_for(lambda: MANAGER in (meta.followers or ()))
    assert manager.state() == tango.DevState.RUNNING
    assert manager.datasetName == "crash_0001"
    assert list(manager.datafileList) == [
        "/data/visitor/hg123/id00/crash_0001/f1.h5",
        "/data/visitor/hg123/id00/crash_0001/f1b.h5",
    ]
    manager.lastDataFile = "/data/visitor/hg123/id00/crash_0001/f2.h5"
    manager.EndDataset()

    [(_, message)] = [
        (seq, m)
        for seq, m in outbox.pending_after(Channel.ICAT, 0, limit=10_000)
        if m.kind is Kind.DATASET and b"crash_0001" in m.body
    ]
    assert outbox.count(Channel.ICAT, Kind.DATASET) == before + 1
    assert b"before the crash" in message.body
    assert b"0.5" in message.body
    positions = [message.body.index(b"/" + name) for name in (b"f1.h5", b"f1b.h5", b"f2.h5")]
    assert positions == sorted(positions), "the files in the order they were written"
    assert message.body.count(b"f1.h5") == 1, "each file registered once"
