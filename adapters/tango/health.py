# mypy: disable-error-code="untyped-decorator"
"""Delivery health as Tango attributes, the same on both devices, for the tools that watch.

Each device with an outbox shows how much waits and why: `undeliveredCount`,
`oldestUndeliveredAge`, `lastDeliveryError`, `brokerConnected`, `setAsideCount`. Every
second a thread of the device pushes them as change and archive events (HDB++); Tango
sends an event only when a value moved by the attribute's absolute change (`abs_change`,
`archive_abs_change`) or its quality changed, so a GUI or an archiver sees few events.

`oldestUndeliveredAge` warns from 60 s and alarms from 600 s, `setAsideCount` warns from
1 and alarms from 10: the attributes' `max_warning` and `max_alarm` properties, which
Jive (or `set_attribute_config`) may change. Reads and events carry the quality that
follows (ATTR_WARNING, ATTR_ALARM), so alarm tools, Taranta and Taurus colour them.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import tango
from tango import AttrQuality, EventType
from tango.server import attribute

from adapters.delivery import DeliveryHealth
from adapters.tango.common import log
from adapters.tango.outlet import CLOSED

PERIOD_S = 1.0
NAMES = (
    "undeliveredCount",
    "oldestUndeliveredAge",
    "lastDeliveryError",
    "brokerConnected",
    "setAsideCount",
)
ALARMED = frozenset({"oldestUndeliveredAge", "setAsideCount"})


def values(health: DeliveryHealth, now: float) -> dict[str, object]:
    """The attributes' values in one snapshot of the outbox and links."""
    return {
        "undeliveredCount": health.undelivered,
        "oldestUndeliveredAge": health.oldest_age(now),
        "lastDeliveryError": health.last_error or "",
        "brokerConnected": health.broker_connected,
        "setAsideCount": health.set_aside,
    }


class HealthAttributes:
    """Mixin of both devices: the health attributes and the thread that pushes their events.

    The device provides `health()` (its outlet's, or CLOSED without one); the default
    here reads `self.outlet`.
    """

    health_watcher: HealthWatcher | None = None

    def init_device(self) -> None:
        super().init_device()  # type: ignore[misc]
        for name in NAMES:
            self.set_change_event(name, True, True)  # type: ignore[attr-defined]
            self.set_archive_event(name, True, True)  # type: ignore[attr-defined]
        if self.health_watcher is None:
            self.health_watcher = HealthWatcher(self)

    def health(self) -> DeliveryHealth:
        outlet = getattr(self, "outlet", None)
        return outlet.health() if outlet is not None else CLOSED

    @attribute(
        dtype=int,
        doc="messages (datasets, investigations, logbook) not yet confirmed by their receiver",
        abs_change="1",
        archive_abs_change="10",
    )
    def undeliveredCount(self) -> int:
        return self.health().undelivered

    @attribute(
        dtype=float,
        unit="s",
        format="%.0f",
        doc="how long the oldest undelivered message has waited; 0 when nothing waits",
        abs_change="10",
        archive_abs_change="60",
        max_warning="60",
        max_alarm="600",
    )
    def oldestUndeliveredAge(self) -> float:
        return self.health().oldest_age(time.time())

    @attribute(dtype=str, doc="why delivery fails now, in words; empty when it works")
    def lastDeliveryError(self) -> str:
        return self.health().last_error or ""

    @attribute(dtype=bool, doc="connected to an ActiveMQ broker of queueURLs")
    def brokerConnected(self) -> bool:
        return self.health().broker_connected

    @attribute(
        dtype=int,
        doc="logbook messages ICAT+ refused for good, kept aside in the outbox",
        abs_change="1",
        archive_abs_change="1",
        max_warning="1",
        max_alarm="10",
    )
    def setAsideCount(self) -> int:
        return self.health().set_aside


def quality(device: Any, name: str, value: object) -> AttrQuality:
    """The quality Tango gives `value` on a read, from the attribute's alarm levels now."""
    if name not in ALARMED:
        return AttrQuality.ATTR_VALID
    attr = device.get_device_attr().get_attr_by_name(name)
    attr.set_value(value)
    try:
        attr.check_alarm()
    except tango.DevFailed:  # no level configured any more
        return AttrQuality.ATTR_VALID
    found: AttrQuality = attr.get_quality()
    return found


def push(device: Any, health: DeliveryHealth, now: float) -> None:
    """Change and archive events of every health attribute someone listens to.

    Under the device monitor. Tango drops the ones within the absolute change.
    """
    for name, value in values(health, now).items():
        kinds = [
            kind
            for kind in (EventType.CHANGE_EVENT, EventType.ARCHIVE_EVENT)
            if device.is_there_subscriber(name, kind)
        ]
        if not kinds:
            continue
        shown = quality(device, name, value)
        if EventType.CHANGE_EVENT in kinds:
            device.push_change_event(name, value, now, shown)
        if EventType.ARCHIVE_EVENT in kinds:
            device.push_archive_event(name, value, now, shown)


class HealthWatcher:
    """The device's thread that pushes the health events every PERIOD_S."""

    def __init__(self, device: Any) -> None:
        self.device = weakref.ref(device)
        self.thread = threading.Thread(
            target=self.watch, name=f"{device.get_name()} health", daemon=True
        )
        self.thread.start()

    def watch(self) -> None:
        while True:
            time.sleep(PERIOD_S)
            device = self.device()
            if device is None:
                return
            try:
                health = device.health()
                with tango.AutoTangoMonitor(device):
                    push(device, health, time.time())
            except tango.DevFailed as error:  # a call held the monitor too long: next time
                log.debug("health events skipped: %s", error.args[0].desc)
            except Exception as error:  # the outbox closing for an Init or a shutdown
                log.debug("health events skipped: %s", error)
            del device
