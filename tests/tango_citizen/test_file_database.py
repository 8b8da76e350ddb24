"""Tango's file database (`-file=FILE`): class and device properties, memorized attributes."""

from __future__ import annotations

from pathlib import Path

import pytest
import tango

from icat_servers.adapters.activemq import free_port
from tests.tango_citizen.conftest import Starter, file_database, wait_until

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` skips them

MANAGER = "id00/metadata/file"
META = "id00/metaexp/file"
ABSENT_META = "id00/metaexp/absent"


def test_metadata_manager_reads_device_over_class_properties_from_a_file(
    start_without_registry: Starter, tmp_path: Path
) -> None:
    class_broker, device_broker = free_port(), free_port()  # nobody listens on either
    database = file_database(
        tmp_path / "manager.db",
        "MetadataManager/file",
        {
            MANAGER: {
                "beamlineID": ["id00"],
                "metaExperimentDevice": [ABSENT_META],
                "parameters": ["Sample_description", "InstrumentSlitPrimary_horizontal_gap"],
                "queueURLs": [f"127.0.0.1:{device_broker}"],
            }
        },
        {"queueURLs": [f"127.0.0.1:{class_broker}"], "queueName": ["fileQueue"]},
    )
    server = start_without_registry("MetadataManager", "file", [f"-file={database}"], [MANAGER])
    manager = server.proxy(MANAGER)

    assert manager.state() == tango.DevState.OFF  # configured: waits for its MetaExperiment
    assert ABSENT_META in manager.status()
    attributes = {info.name for info in manager.attribute_list_query()}
    assert {"Sample_description", "InstrumentSlitPrimary_horizontal_gap"} <= attributes
    wait_until(lambda: manager.lastDeliveryError, what="a delivery error")
    assert f"127.0.0.1:{device_broker}" in manager.lastDeliveryError
    assert str(class_broker) not in manager.lastDeliveryError

    manager.Init()  # re-reads the file: the same configuration, no crash
    assert manager.state() == tango.DevState.OFF
    wait_until(lambda: manager.lastDeliveryError, what="a delivery error after Init")
    assert f"127.0.0.1:{device_broker}" in manager.lastDeliveryError
    assert server.process.poll() is None


def test_meta_experiment_keeps_its_memorized_attributes_in_the_file(
    start_without_registry: Starter, tmp_path: Path
) -> None:
    database = file_database(
        tmp_path / "meta.db", "MetaExperiment/file", {META: {"beamlineID": ["id00"]}}, {}
    )
    server = start_without_registry("MetaExperiment", "file", [f"-file={database}"], [META])
    meta = server.proxy(META)
    assert meta.state() == tango.DevState.ON
    meta.proposal = "hg123"
    meta.sample = "quartz"
    assert meta.undeliveredCount == 1  # the investigation start, kept: queueURLs is empty

    server.stop()
    again = start_without_registry("MetaExperiment", "file", [f"-file={database}"], [META])
    meta = again.proxy(META)

    assert (meta.proposal, meta.sample) == ("hg123", "quartz")
