"""The pieces the Tango tools rely on, without a server: declarations, masking, levels."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from tango import AttrQuality, EventType
from tango.server import class_property, device_property

from icat_servers.adapters.tango import health, logs, properties
from icat_servers.adapters.tango.meta_experiment import MetaExperiment
from icat_servers.adapters.tango.metadata_manager import MetadataManager
from icat_servers.icatcore import config

REQUIRED: Mapping[str, dict[str, list[str]]] = {
    "MetaExperiment": {"beamlineID": ["id00"]},
    "MetadataManager": {"beamlineID": ["id00"], "metaExperimentDevice": ["id00/metaexp/test"]},
}
PARSE: Mapping[str, Callable[[config.Properties], object]] = {
    "MetaExperiment": config.meta_experiment,
    "MetadataManager": config.metadata_manager,
}


@pytest.mark.parametrize("class_name", sorted(config.CLASS_PROPERTIES))
def test_every_property_icatcore_reads_is_declared_once_as_class_or_device_property(
    class_name: str,
) -> None:
    declared = vars(properties.declared(class_name))
    classwide = {n for n, v in declared.items() if isinstance(v, class_property)}
    own = {n for n, v in declared.items() if isinstance(v, device_property)}

    assert classwide == set(config.CLASS_PROPERTIES[class_name])
    assert own == set(config.DEVICE_PROPERTIES[class_name]) - classwide - {"beamlineId"}
    assert "beamlineId" not in declared, "Tango's names ignore case: it is beamlineID to Jive"
    for name in classwide | own:
        assert declared[name].doc.strip()
        assert isinstance(declared[name].default_value, list) == properties.multi_valued(name)


@pytest.mark.parametrize("class_name", sorted(config.CLASS_PROPERTIES))
def test_each_declared_default_is_what_icatcore_uses_when_the_property_is_absent(
    class_name: str,
) -> None:
    parse = PARSE[class_name]
    for name in sorted(config.DEVICE_PROPERTIES[class_name]):
        default = properties.described(name).default
        if not default:
            continue
        given: Sequence[str] = [default]
        assert parse({**REQUIRED[class_name], name: given}) == parse(REQUIRED[class_name]), name


@pytest.mark.parametrize("device", [MetaExperiment, MetadataManager])
def test_the_device_classes_keep_every_declaration(device: type) -> None:
    """A device member of a property's name would silently drop the declaration."""
    name = device.__name__
    tango_class = device.TangoClassClass  # type: ignore[attr-defined]

    assert set(tango_class.class_property_list) == set(config.CLASS_PROPERTIES[name])
    assert set(tango_class.device_property_list) == (
        set(config.DEVICE_PROPERTIES[name]) - set(config.CLASS_PROPERTIES[name]) - {"beamlineId"}
    )
    assert set(health.NAMES) <= set(tango_class.attr_list)


def test_a_name_without_a_description_gets_a_generic_one() -> None:
    assert "README" in properties.described("someFutureProperty").description


def test_the_configuration_line_names_secrets_but_never_shows_them() -> None:
    read = {
        "API_KEY": ["k-123456"],
        "queuePasscode": ["p-654321"],
        "API_KEY_FILE": ["/etc/icat/key"],
        "queueURLs": ["a:1", "b:2"],
        "beamlineID": ["id00"],
    }

    line = properties.shown(read)

    assert "k-123456" not in line and "p-654321" not in line
    assert "API_KEY=(set, not shown)" in line and "queuePasscode=(set, not shown)" in line
    assert "API_KEY_FILE='/etc/icat/key'" in line  # a path is not the secret
    assert "queueURLs=['a:1', 'b:2']" in line and "beamlineID='id00'" in line
    assert sorted(properties.secrets(read)) == ["k-123456", "p-654321"]


@pytest.mark.parametrize(
    ("python", "log4tango"),
    [(10, 600), (20, 500), (30, 400), (40, 300), (50, 200)],
)
def test_python_levels_map_to_tangos(python: int, log4tango: int) -> None:
    assert logs.tango_level(python) == log4tango


def test_known_secrets_are_masked_in_every_line() -> None:
    handler = logs.TangoHandler()
    handler.hide(["s3cr3t", "s3cr3t-longer"])

    assert handler.masked("key s3cr3t-longer and s3cr3t") == "key *** and ***"


def test_a_thread_held_a_few_objects_deep_is_found_as_the_devices() -> None:
    thread = threading.Thread(target=lambda: None)
    device = SimpleNamespace(outlet=SimpleNamespace(delivery=SimpleNamespace(sender=thread)))

    assert list(logs._threads(device)) == [thread]
    assert list(logs._threads(SimpleNamespace(other=SimpleNamespace()))) == []


LEVELS = SimpleNamespace(
    max_warning="60",
    max_alarm="600",
    min_warning="Not specified",
    min_alarm="Not specified",
    abs_change="10",
    archive_abs_change="60",
)


@pytest.mark.parametrize(
    ("value", "quality"),
    [
        (0.0, AttrQuality.ATTR_VALID),
        (59.9, AttrQuality.ATTR_VALID),
        (60.0, AttrQuality.ATTR_WARNING),
        (600.0, AttrQuality.ATTR_ALARM),
        (True, AttrQuality.ATTR_VALID),
        ("text", AttrQuality.ATTR_VALID),
    ],
)
def test_quality_follows_the_attributes_levels_as_tango_reads_it(
    value: Any, quality: AttrQuality
) -> None:
    assert health.quality(LEVELS, value) == quality


def test_an_event_is_pushed_only_past_the_absolute_change_or_on_a_new_quality() -> None:
    valid, warning = AttrQuality.ATTR_VALID, AttrQuality.ATTR_WARNING
    change = health._threshold(LEVELS, EventType.CHANGE_EVENT)
    archive = health._threshold(LEVELS, EventType.ARCHIVE_EVENT)

    assert (change, archive) == (10.0, 60.0)
    assert not health._moved((3.0, valid), (12.9, valid), change)
    assert health._moved((3.0, valid), (13.0, valid), change)
    assert not health._moved((3.0, valid), (13.0, valid), archive)
    assert health._moved((59.0, valid), (60.0, warning), archive)
    assert health._moved(("", valid), ("broker down", valid), None)
    assert not health._moved((False, valid), (False, valid), None)
