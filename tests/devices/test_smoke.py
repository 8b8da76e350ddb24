from __future__ import annotations

from pathlib import Path

import tango

from tests.devices.conftest import MANAGER, META, Beamline
from tests.devices.tango_session import wait_for


def test_manager_follows_the_meta_experiment(beamline: Beamline) -> None:
    meta = tango.DeviceProxy(META)
    manager = tango.DeviceProxy(MANAGER)
    wait_for(lambda: MANAGER in (meta.followers or ()))
    meta.proposal = ""
    assert manager.state() == tango.DevState.OFF
    meta.proposal = "hg123"
    assert manager.state() == tango.DevState.STANDBY
    meta.sample = "lysozyme"
    manager.datasetName = "sample_0001"
    assert manager.state() == tango.DevState.ON
    manager.StartDataset()
    assert manager.state() == tango.DevState.RUNNING
    manager.EndDataset()
    assert manager.state() == tango.DevState.STANDBY
    wait_for(lambda: manager.metadataFile != "")
    copy = Path(manager.metadataFile)
    assert copy.is_file() and b"<tns:name>sample_0001</tns:name>" in copy.read_bytes()
