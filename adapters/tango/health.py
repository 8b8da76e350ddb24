# mypy: disable-error-code="untyped-decorator"
"""Delivery health as Tango attributes, the same on both devices, for the tools that watch.

Each device with an outbox shows how much waits and why: `undeliveredCount`,
`oldestUndeliveredAge`, `lastDeliveryError`, `brokerConnected`, `setAsideCount`. Every
second a thread of the device looks, and pushes a change or archive event (HDB++) only
when a value moved by the attribute's absolute change (`abs_change`,
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
from typing import Any, ClassVar

import tango
from tango import AttrQuality, EventType
from tango.server import attribute

from icat_servers.adapters.delivery import CLOSED, DeliveryHealth
from icat_servers.adapters.tango.common import log

PERIOD_S = 1.0
NAMES = (
    "undeliveredCount",
    "oldestUndeliveredAge",
    "lastDeliveryError",
    "brokerConnected",
    "setAsideCount",
)
VALID = AttrQuality.ATTR_VALID


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

    health_thread: ClassVar[bool] = True
    """Whether the mixin runs its own thread; a device whose own watcher calls
    `push_health` every second under its monitor sets it False."""
    health_watcher: HealthWatcher | None = None
    health_pusher: Pusher | None = None

    def init_device(self) -> None:
        super().init_device()  # type: ignore[misc]
        for name in NAMES:
            self.set_change_event(name, True, True)  # type: ignore[attr-defined]
            self.set_archive_event(name, True, True)  # type: ignore[attr-defined]
        if self.health_thread and self.health_watcher is None:
            self.health_watcher = HealthWatcher(self)

    def push_health(self, health: DeliveryHealth | None = None) -> None:
        """Under the device monitor: the health events Tango should send now."""
        if self.health_pusher is None:
            self.health_pusher = Pusher()
        self.health_pusher.push(self, self.health() if health is None else health, time.time())

    def delete_device(self) -> None:
        """Stop pushing: the device is going (Init makes a new watcher)."""
        if self.health_watcher is not None:
            self.health_watcher.stop()
            self.health_watcher = None
        super().delete_device()  # type: ignore[misc]

    def dev_state(self) -> tango.DevState:
        """The state the device set: Tango's default would turn ON into ALARM while a
        health attribute is past its alarm level, and the SPEC's states are what clients
        wait for; the attribute quality carries the alarm (and an outage is no FAULT)."""
        return self.get_state()  # type: ignore[attr-defined,no-any-return]

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


Shown = tuple[object, AttrQuality]


class Pusher:
    """Pushes a health attribute's event only when Tango would send one.

    Only when the value moved by the attribute's absolute change (`abs_change` for change
    events, `archive_abs_change` for archive events) since the last one pushed, or the
    value or quality changed otherwise. Pushing every second and letting Tango drop the
    rest would make Tango log "WARNING quality" at each push of a value in warning.
    """

    def __init__(self) -> None:
        self.last: dict[tuple[str, EventType], Shown] = {}

    def push(self, device: Any, health: DeliveryHealth, now: float) -> None:
        """Under the device monitor: the events of every attribute someone listens to."""
        for name, value in values(health, now).items():
            kinds = [
                kind
                for kind in (EventType.CHANGE_EVENT, EventType.ARCHIVE_EVENT)
                if device.is_there_subscriber(name, kind)
            ]
            if not kinds:
                continue
            properties = device.get_device_attr().get_attr_by_name(name).get_properties()
            shown = (value, quality(properties, value))
            for kind in kinds:
                last = self.last.get((name, kind))
                if last is not None and not _moved(last, shown, _threshold(properties, kind)):
                    continue
                if kind == EventType.CHANGE_EVENT:
                    device.push_change_event(name, value, now, shown[1])
                else:
                    device.push_archive_event(name, value, now, shown[1])
                self.last[(name, kind)] = shown


def quality(properties: Any, value: object) -> AttrQuality:
    """The quality Tango gives `value` on a read, from the attribute's alarm levels now.

    Worked out from the levels rather than by Tango's check_alarm, which also logs a
    warning line at every call.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return VALID
    for level, above, below in (
        (AttrQuality.ATTR_ALARM, properties.max_alarm, properties.min_alarm),
        (AttrQuality.ATTR_WARNING, properties.max_warning, properties.min_warning),
    ):
        if _beyond(value, above, below):
            return level
    return VALID


def _number(text: object) -> float | None:
    try:
        return float(str(text))
    except ValueError:  # "Not specified"
        return None


def _beyond(value: float, above: object, below: object) -> bool:
    """Tango's rule: at or over the upper level, at or under the lower one."""
    upper, lower = _number(above), _number(below)
    return (upper is not None and value >= upper) or (lower is not None and value <= lower)


def _threshold(properties: Any, kind: EventType) -> float | None:
    if kind == EventType.CHANGE_EVENT:
        return _number(properties.abs_change)
    return _number(properties.archive_abs_change)


def _moved(last: Shown, now: Shown, threshold: float | None) -> bool:
    if last[1] != now[1]:
        return True
    before, value = last[0], now[0]
    if threshold is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(value - before) >= threshold  # type: ignore[operator]
    return value != before


class HealthWatcher:
    """The device's thread that pushes the health events every PERIOD_S."""

    def __init__(self, device: Any) -> None:
        self.device = weakref.ref(device)
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self.watch, name=f"{device.get_name()} health", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        """Without waiting: the caller may hold the device monitor the thread waits for."""
        self.stopping.set()

    def watch(self) -> None:
        while not self.stopping.wait(PERIOD_S):
            device = self.device()
            if device is None:
                return
            try:
                health = device.health()
                with tango.AutoTangoMonitor(device):
                    if self.stopping.is_set():
                        return
                    device.push_health(health)
            except tango.DevFailed as error:  # a call held the monitor too long: next time
                log.debug("health events skipped: %s", error.args[0].desc)
            except Exception as error:  # the outbox closing for an Init or a shutdown
                log.debug("health events skipped: %s", error)
            del device
