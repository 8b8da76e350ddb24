"""Health on both devices as a subscribing client (a GUI, HDB++, an alarm tool) sees it."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import pytest
import tango
from tango import AttrQuality, EventType

from icat_servers.adapters.tango.health import NAMES
from tests.tango_citizen.conftest import REFUSAL, Process, Starter, file_database, wait_until

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` skips them

MANAGER = "id00/metadata/health"
META = "id00/metaexp/health"


class Events:
    """(value, quality) of every event, by (device, attribute, event type)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, EventType], list[tuple[object, AttrQuality]]] = defaultdict(
            list
        )
        self.errors: list[str] = []
        self.guard = threading.Lock()

    def record(self, kind: EventType, event: tango.EventData) -> None:
        with self.guard:
            if event.err:
                self.errors.append(event.errors[0].desc)
                return
            # tango://host:port/domain/family/member/attribute#dbase=no
            name = event.attr_name.lower().split("#")[0]
            *_, domain, family, member, attribute = name.split("/")
            key = (f"{domain}/{family}/{member}", attribute, kind)
            self.seen[key].append((event.attr_value.value, event.attr_value.quality))

    def of(self, device: str, attribute: str, kind: EventType) -> list[tuple[object, AttrQuality]]:
        with self.guard:
            return list(self.seen[(device, attribute.lower(), kind)])


def arrived(
    events: Events,
    device: str,
    attribute: str,
    kind: EventType,
    value: object = None,
    quality: AttrQuality | None = None,
) -> bool:
    """An event of this value (None: any) and quality (None: any) has arrived."""
    return any(
        (value is None or seen == value) and (quality is None or shown == quality)
        for seen, shown in events.of(device, attribute, kind)
    )


def subscribe(proxy: tango.DeviceProxy, events: Events) -> list[int]:
    return [
        proxy.subscribe_event(name, kind, partial(events.record, kind))
        for name in NAMES
        for kind in (EventType.CHANGE_EVENT, EventType.ARCHIVE_EVENT)
    ]


@pytest.fixture
def devices(
    start_without_registry: Starter, tmp_path: Path, refusing_icatplus: str
) -> tuple[Process, Process]:
    """A MetaExperiment with no broker, a MetadataManager whose ICAT+ refuses everything."""
    meta_db = file_database(
        tmp_path / "meta.db", "MetaExperiment/health", {META: {"beamlineID": ["id00"]}}, {}
    )
    manager_db = file_database(
        tmp_path / "manager.db",
        "MetadataManager/health",
        {
            MANAGER: {
                "beamlineID": ["id00"],
                "metaExperimentDevice": ["id00/metaexp/elsewhere"],
                "icatplus_server": [refusing_icatplus],
                "API_KEY": ["health-test-key"],
            }
        },
        {},
    )
    meta = start_without_registry("MetaExperiment", "health", [f"-file={meta_db}"], [META])
    manager = start_without_registry(
        "MetadataManager", "health", [f"-file={manager_db}"], [MANAGER]
    )
    return meta, manager


def test_both_devices_show_health_with_levels_for_the_alarm_tools(
    devices: tuple[Process, Process],
) -> None:
    meta, manager = (
        server.proxy(name) for server, name in zip(devices, (META, MANAGER), strict=True)
    )
    for proxy in (meta, manager):
        assert {info.name for info in proxy.attribute_list_query()} >= set(NAMES)
        age = proxy.get_attribute_config("oldestUndeliveredAge")
        assert (age.alarms.max_warning, age.alarms.max_alarm) == ("60", "600")
        assert age.events.ch_event.abs_change == "10"
        assert age.events.arch_event.archive_abs_change == "60"
        aside = proxy.get_attribute_config("setAsideCount")
        assert (aside.alarms.max_warning, aside.alarms.max_alarm) == ("1", "10")
        assert proxy.brokerConnected is False


def test_waiting_messages_raise_the_age_quality_with_few_events(
    devices: tuple[Process, Process],
) -> None:
    meta = devices[0].proxy(META)
    age = meta.get_attribute_config("oldestUndeliveredAge")
    age.alarms.max_warning, age.alarms.max_alarm = "1", "3"  # seconds, not minutes
    meta.set_attribute_config(age)
    events = Events()
    subscribe(meta, events)

    meta.proposal = "hg124"  # the investigation start waits: no broker
    started = time.monotonic()

    wait_until(
        lambda: (
            (1, AttrQuality.ATTR_VALID)
            in events.of(META, "undeliveredCount", EventType.CHANGE_EVENT)
        ),
        what="undeliveredCount 1",
    )
    for kind in (EventType.CHANGE_EVENT, EventType.ARCHIVE_EVENT):
        for quality in (AttrQuality.ATTR_WARNING, AttrQuality.ATTR_ALARM):
            wait_until(
                partial(arrived, events, META, "oldestUndeliveredAge", kind, quality=quality),
                what=f"oldestUndeliveredAge {kind} {quality}",
            )
    wait_until(lambda: time.monotonic() - started > 7, what="7 s of waiting")
    ages = events.of(META, "oldestUndeliveredAge", EventType.CHANGE_EVENT)
    # subscription, first push, WARNING, ALARM: not one per second (abs_change is 10 s)
    assert len(ages) <= 5, ages
    assert meta.read_attribute("oldestUndeliveredAge").quality == AttrQuality.ATTR_ALARM
    assert meta.state() == tango.DevState.ON, "an outage is not a state: clients wait for ON"
    assert not events.errors


def test_a_refused_logbook_message_is_a_set_aside_warning(
    devices: tuple[Process, Process],
) -> None:
    manager = devices[1].proxy(MANAGER)
    events = Events()
    subscribe(manager, events)

    manager.notifyInfo("the beam is back")

    for kind in (EventType.CHANGE_EVENT, EventType.ARCHIVE_EVENT):
        wait_until(
            partial(arrived, events, MANAGER, "setAsideCount", kind, 1, AttrQuality.ATTR_WARNING),
            what=f"setAsideCount 1 WARNING as {kind}",
        )
    wait_until(
        lambda: any(
            REFUSAL in str(value)
            for value, _ in events.of(MANAGER, "lastDeliveryError", EventType.CHANGE_EVENT)
        ),
        what="the refusal in lastDeliveryError",
    )
    assert manager.read_attribute("setAsideCount").quality == AttrQuality.ATTR_WARNING
    assert "health-test-key" not in manager.lastDeliveryError
    assert not events.errors


def test_health_events_keep_coming_after_init(devices: tuple[Process, Process]) -> None:
    meta = devices[0].proxy(META)
    events = Events()
    subscribe(meta, events)
    meta.proposal = "hg126"
    wait_until(
        partial(arrived, events, META, "undeliveredCount", EventType.CHANGE_EVENT, 1),
        what="undeliveredCount 1",
    )

    meta.Init()
    meta.proposal = "hg127"

    wait_until(
        partial(arrived, events, META, "undeliveredCount", EventType.CHANGE_EVENT, 2),
        what="undeliveredCount 2 after Init",
    )
    assert meta.undeliveredCount == 2
