"""`-nodb`: the servers run, say what is missing, and Jive's wizard lists every property."""

from __future__ import annotations

import pytest
import tango

from icat_servers.icatcore import config
from tests.tango_citizen.conftest import Starter

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` skips them

MANAGER = "id00/metadata/nodb"
META = "id00/metaexp/nodb"


def wizard(admin: tango.DeviceProxy, command: str, class_name: str) -> dict[str, list[str]]:
    """The admin device's wizard answer: name -> [description, default]."""
    flat = list(admin.command_inout(command, class_name))
    return {flat[i]: flat[i + 1 : i + 3] for i in range(0, len(flat), 3)}


def test_metadata_manager_without_database_is_fault_naming_every_required_property(
    start_without_registry: Starter,
) -> None:
    server = start_without_registry(
        "MetadataManager", "nodb", ["-nodb", "-dlist", MANAGER], [MANAGER]
    )
    manager = server.proxy(MANAGER)

    assert manager.state() == tango.DevState.FAULT
    status = manager.status()
    for name in config.REQUIRED_DEVICE_PROPERTIES["MetadataManager"]:
        assert name in status
    assert "-nodb" in status and "-file=" in status
    assert manager.undeliveredCount == 0  # health still answers: the server did not crash


def test_meta_experiment_without_database_runs_and_reads_its_memorized_attributes(
    start_without_registry: Starter,
) -> None:
    server = start_without_registry("MetaExperiment", "nodb", ["-nodb", "-dlist", META], [META])
    meta = server.proxy(META)

    assert meta.state() == tango.DevState.FAULT
    assert "beamlineID" in meta.status()
    assert (meta.proposal, meta.sample, meta.dataRoot) == ("", "", "")
    meta.Init()  # re-reads properties and memorized attributes: still no database, no crash
    assert meta.state() == tango.DevState.FAULT
    assert server.process.poll() is None


@pytest.mark.parametrize("class_name", ["MetadataManager", "MetaExperiment"])
def test_wizard_lists_every_property_with_a_description(
    start_without_registry: Starter, class_name: str
) -> None:
    device = MANAGER if class_name == "MetadataManager" else META
    server = start_without_registry(class_name, "wizard", ["-nodb", "-dlist", device], [device])
    admin = server.proxy(f"dserver/{class_name}/wizard")

    class_properties = wizard(admin, "QueryWizardClassProperty", class_name)
    device_properties = wizard(admin, "QueryWizardDevProperty", class_name)

    assert set(class_properties) == set(config.CLASS_PROPERTIES[class_name])
    assert set(device_properties) == (
        set(config.DEVICE_PROPERTIES[class_name])
        - set(config.CLASS_PROPERTIES[class_name])
        - {"beamlineId"}  # Tango's names ignore case: the wizard lists it as beamlineID
    )
    for name, (description, _default) in {**class_properties, **device_properties}.items():
        assert description.strip(), f"{name} has no description"
    assert class_properties["queueName"][1] == "/queue/icatIngest"
    assert class_properties["jolokiaPort"][1] == "0"
    assert "secret" in class_properties["queuePasscode"][0]
    assert device_properties["beamlineID"][0].startswith("required")
