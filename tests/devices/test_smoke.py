from __future__ import annotations

from pathlib import Path

import pytest
import tango

from icat_servers.adapters.tango.metadata_manager import KEPT_COPIES, PRUNE_EVERY
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
    before = manager.metadataFile  # an earlier test's dataset, perhaps
    manager.EndDataset()
    assert manager.state() == tango.DevState.STANDBY
    wait_for(lambda: manager.metadataFile not in ("", before))
    copy = Path(manager.metadataFile)
    assert copy.is_file() and b"<tns:name>sample_0001</tns:name>" in copy.read_bytes()


@pytest.mark.slow
def test_only_the_latest_xml_copies_are_kept(beamline: Beamline) -> None:
    meta = tango.DeviceProxy(META)
    manager = tango.DeviceProxy(MANAGER)
    wait_for(lambda: MANAGER in (meta.followers or ()))
    meta.proposal = ""
    meta.proposal = "hg123"
    meta.sample = "lysozyme"
    copies = beamline.outbox_path() / "metadata"
    for number in range(KEPT_COPIES + 2 * PRUNE_EVERY):
        manager.datasetName = f"many_{number}"
        manager.StartDataset()
        manager.EndDataset()
    last = manager.metadataFile
    wait_for(
        lambda: (
            b"many_" + str(KEPT_COPIES + 2 * PRUNE_EVERY - 1).encode()
            in Path(manager.metadataFile).read_bytes()
        ),
        timeout=30,
    )
    assert 0 < len(list(copies.glob("*.xml"))) <= KEPT_COPIES + PRUNE_EVERY
    assert last
