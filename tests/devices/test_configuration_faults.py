"""A bad property is a FAULT that names it and the fix; Reset after the fix recovers."""

from __future__ import annotations

import tango

from tests.devices.conftest import META, Beamline
from tests.devices.tango_session import wait_for
from tests.services.servers import Server, register

FAULTY = "id00/metadata/faulty"


def test_missing_beamline_is_a_fault_naming_it_and_reset_recovers(
    beamline: Beamline, tango_db: str
) -> None:
    register(
        tango_db,
        "MetadataManager/faulty",
        "MetadataManager",
        {FAULTY: {"metaExperimentDevice": [META], "parameters": ["NotAnIcatName"]}},
    )
    server = Server(
        "MetadataManager",
        "faulty",
        tango_db,
        beamline.state / "faulty.log",
        [FAULTY],
        {"ICAT_SERVERS_STATE": str(beamline.state)},
    )
    server.start()
    try:
        manager = tango.DeviceProxy(FAULTY)
        assert manager.state() == tango.DevState.FAULT
        assert "NotAnIcatName" in manager.status()
        manager.Reset()
        assert manager.state() == tango.DevState.FAULT

        database = tango.Database()
        database.put_device_property(FAULTY, {"parameters": ["Sample_description"]})
        manager.Reset()
        assert manager.state() == tango.DevState.FAULT
        assert "beamlineID is missing" in manager.status()

        database.put_device_property(FAULTY, {"beamlineID": ["id00"]})
        manager.Reset()
        assert manager.state() != tango.DevState.FAULT
        wait_for(lambda: FAULTY in (tango.DeviceProxy(META).followers or ()))
        assert manager.Sample_description == ""
        assert "cannot be reached" not in manager.status()
    finally:
        server.kill()
