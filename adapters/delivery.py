"""Durable delivery: the one object the Tango devices use to send anything.

`put` stores a message durably and wakes the sender of its channel; the senders
deliver from the outbox and remove a message only when its receiver confirmed it.
`health` tells the device what to show: how much waits, since when, and why, in words
a beamline scientist understands. Nothing it says contains a secret.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from icat_servers.adapters.icatplus import IcatPlusSender
from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.adapters.stomp_sender import StompSender
from icat_servers.icatcore import config
from icat_servers.icatcore.outbox import Channel, Kind, OutboxMessage


@dataclass(frozen=True, slots=True)
class StompSettings:
    """The broker side of icatcore.config.Delivery, as typed values: no parsing here."""

    brokers: tuple[config.BrokerAddress, ...]
    destination: str
    """Normalised by icatcore.config, e.g. `/queue/icatIngest`."""
    login: str = ""
    passcode: str = field(default="", repr=False)
    heartbeat_ms: int = 5000
    ca_file: str = ""
    """`queueCAFile` for `ssl://` brokers; "" = the system's CAs."""

    @classmethod
    def of(cls, settings: config.Delivery, *, heartbeat_ms: int = 5000) -> StompSettings:
        return cls(
            settings.brokers,
            settings.queue,
            settings.login,
            settings.passcode,
            heartbeat_ms,
            settings.ca_file,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.brokers)


@dataclass(frozen=True, slots=True)
class IcatPlusSettings:
    """`icatplus_server` and `API_KEY` (never shown: repr hides it)."""

    base_url: str
    api_key: str = field(repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.base_url.strip())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


@dataclass(frozen=True, slots=True)
class DeliveryHealth:
    """A snapshot of the outbox and the links, for Tango attributes and Status."""

    undelivered: int
    """Messages of every channel not yet confirmed by their receiver."""
    undelivered_datasets: int
    oldest_created: float | None
    last_error: str | None
    """The most relevant delivery problem, None when delivery works; secret-free."""
    broker_connected: bool
    set_aside: int
    """Messages ICAT+ refused for good; kept in the outbox database, never deleted."""
    icat_enabled: bool
    icatplus_enabled: bool
    icat_waiting: int = 0
    icatplus_waiting: int = 0
    broker_address: str | None = None
    broker_error: str | None = None
    broker_failing_since: float | None = None
    icatplus_error: str | None = None
    icatplus_failing_since: float | None = None

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest undelivered message has waited; 0 when nothing waits."""
        if self.oldest_created is None:
            return 0.0
        return max(0.0, now - self.oldest_created)

    def status_line(self, now: float) -> str:
        """One or two sentences for the device Status."""
        parts: list[str] = []
        investigations = self.icat_waiting - self.undelivered_datasets
        what = " and ".join(
            _plural(n, word)
            for n, word in (
                (self.undelivered_datasets, "dataset"),
                (investigations, "investigation message"),
            )
            if n
        )
        if not self.icat_enabled:
            if self.icat_waiting:
                parts.append(f"ICAT delivery is off: queueURLs is empty; {what} kept in the outbox")
            else:
                parts.append(
                    "ICAT delivery is off: queueURLs is empty; messages are kept in the outbox"
                )
        elif self.icat_waiting:
            if self.broker_error is not None:
                since = (
                    f" since {_clock(self.broker_failing_since)}"
                    if self.broker_failing_since is not None
                    else ""
                )
                parts.append(f"{what} waiting: {self.broker_error}{since}")
            else:
                parts.append(f"{what} being sent to broker {self.broker_address}")
        logbook = _plural(self.icatplus_waiting, "logbook message")
        if not self.icatplus_enabled:
            if self.icatplus_waiting:
                parts.append(
                    f"e-logbook delivery is off: icatplus_server is empty; {logbook} "
                    "kept in the outbox"
                )
        elif self.icatplus_waiting:
            if self.icatplus_error is not None:
                since = (
                    f" since {_clock(self.icatplus_failing_since)}"
                    if self.icatplus_failing_since is not None
                    else ""
                )
                parts.append(f"{logbook} waiting: {self.icatplus_error}{since}")
            else:
                parts.append(f"{logbook} being sent to ICAT+")
        if self.set_aside:
            parts.append(
                f"{_plural(self.set_aside, 'logbook message')} refused by ICAT+ and set aside "
                "(kept in the outbox)"
            )
        if not parts:
            parts.append("all messages delivered")
        if self.undelivered and self.oldest_created is not None:
            parts.append(f"oldest waiting for {self.oldest_age(now):.0f} s")
        return "; ".join(parts)


class Delivery:
    """Outbox plus the senders that empty it; what the devices construct and call."""

    def __init__(
        self,
        store: OutboxStore,
        stomp: StompSettings | None,
        icatplus: IcatPlusSettings | None,
    ) -> None:
        self.store = store
        self.stomp_settings = stomp if stomp is not None and stomp.enabled else None
        self.icatplus_settings = icatplus if icatplus is not None and icatplus.enabled else None
        self.stomp_sender: StompSender | None = None
        self.icatplus_sender: IcatPlusSender | None = None
        if self.stomp_settings is not None:
            s = self.stomp_settings
            self.stomp_sender = StompSender(
                store,
                s.brokers,
                s.destination,
                login=s.login,
                passcode=s.passcode,
                heartbeat_ms=s.heartbeat_ms,
                ca_file=s.ca_file,
            )
        if self.icatplus_settings is not None:
            self.icatplus_sender = IcatPlusSender(
                store, self.icatplus_settings.base_url, self.icatplus_settings.api_key
            )
        self.settings = config.Delivery()
        """The configuration it was opened with (`opened`), to know when to reopen."""
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Start delivering, including what an earlier run left in the outbox."""
        if self._started:
            return
        self._started = True
        for sender in (self.stomp_sender, self.icatplus_sender):
            if sender is not None:
                sender.start()

    @classmethod
    def opened(cls, directory: Path, settings: config.Delivery) -> Delivery:
        """A device's way out, from its configuration: the outbox in `directory` and the
        senders `settings` name, delivering. Raises OutboxUnavailable."""
        delivery = cls(
            OutboxStore(directory),
            StompSettings.of(settings),
            IcatPlusSettings(settings.icatplus_server, settings.api_key),
        )
        delivery.settings = settings
        delivery.start()
        return delivery

    @property
    def queue(self) -> str:
        return self.settings.queue

    def put(self, msg: OutboxMessage, *, journal: Mapping[str, str | None] | None = None) -> None:
        """Store durably (raises OutboxUnavailable if it cannot), then wake its sender.

        `journal` entries (work in progress, see `note`) are written in the same
        transaction."""
        self.store.put(msg, journal=_encoded(journal or {}))
        if msg.channel is Channel.ICAT:
            if self.stomp_sender is not None:
                self.stomp_sender.wake()
        elif self.icatplus_sender is not None:
            self.icatplus_sender.wake()

    def note(
        self, journal: Mapping[str, str | None], appended: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Keep work in progress for a restart (a running dataset): None forgets a key."""
        self.store.note(
            _encoded(journal),
            {key: [item.encode() for item in items] for key, items in (appended or {}).items()},
        )

    def recall(self, key: str) -> str | None:
        value = self.store.recall(key)
        return None if value is None else value.decode()

    def recall_items(self, key: str) -> list[str]:
        return [item.decode() for item in self.store.recall_items(key)]

    def status_line(self) -> str:
        return self.health().status_line(time.time())

    def health(self) -> DeliveryHealth:
        store = self.store
        icat_waiting = store.known_count(Channel.ICAT)
        icatplus_waiting = store.known_count(Channel.ICATPLUS)
        broker = self.stomp_sender.status() if self.stomp_sender is not None else None
        plus = self.icatplus_sender.status() if self.icatplus_sender is not None else None
        broker_error = broker.last_error if broker is not None else None
        plus_error = plus.last_error if plus is not None else None
        return DeliveryHealth(
            undelivered=icat_waiting + icatplus_waiting,
            undelivered_datasets=store.known_count(Channel.ICAT, Kind.DATASET),
            oldest_created=store.known_oldest_created(),
            last_error=broker_error or plus_error,
            broker_connected=broker.connected if broker is not None else False,
            set_aside=store.known_set_aside_count(),
            icat_enabled=self.stomp_sender is not None,
            icatplus_enabled=self.icatplus_sender is not None,
            icat_waiting=icat_waiting,
            icatplus_waiting=icatplus_waiting,
            broker_address=broker.address if broker is not None else None,
            broker_error=broker_error,
            broker_failing_since=broker.failing_since if broker is not None else None,
            icatplus_error=plus_error,
            icatplus_failing_since=plus.failing_since if plus is not None else None,
        )

    def close(self) -> None:
        """Stop the senders and close the outbox; unconfirmed messages stay stored."""
        if self._closed:
            return
        self._closed = True
        for sender in (self.stomp_sender, self.icatplus_sender):
            if sender is not None:
                sender.stop()
        self.store.close()


CLOSED = DeliveryHealth(
    undelivered=0,
    undelivered_datasets=0,
    oldest_created=None,
    last_error="the outbox is not open: see Status",
    broker_connected=False,
    set_aside=0,
    icat_enabled=False,
    icatplus_enabled=False,
)
"""What a device without an outbox shows: nothing waits, nothing is delivered."""


def reopened(delivery: Delivery | None, directory: Path, settings: config.Delivery) -> Delivery:
    """The device's delivery for these settings: the same one, or a new one if they changed.

    Raises OutboxUnavailable when the outbox cannot be opened.
    """
    if delivery is not None and delivery.settings == settings:
        return delivery
    if delivery is not None:
        delivery.close()
    return Delivery.opened(directory, settings)


def _encoded(journal: Mapping[str, str | None]) -> dict[str, bytes | None]:
    return {key: None if value is None else value.encode() for key, value in journal.items()}
