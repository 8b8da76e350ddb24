"""A device's way out: its durable outbox and the senders, built from its configuration."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from icat_servers.adapters.delivery import Delivery, DeliveryHealth, IcatPlusSettings, StompSettings
from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.icatcore import config
from icat_servers.icatcore.outbox import OutboxMessage

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


class Outlet:
    def __init__(self, directory: Path, settings: config.Delivery) -> None:
        self.settings = settings
        self.queue = settings.queue
        self.delivery = Delivery(
            OutboxStore(directory),
            StompSettings.of(settings),
            IcatPlusSettings(settings.icatplus_server, settings.api_key),
        )
        self.delivery.start()

    def put(
        self, message: OutboxMessage, *, journal: Mapping[str, str | None] | None = None
    ) -> None:
        self.delivery.put(message, journal=_encoded(journal or {}))

    def note(
        self,
        journal: Mapping[str, str | None],
        appended: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.delivery.store.note(
            _encoded(journal),
            {key: [item.encode() for item in items] for key, items in (appended or {}).items()},
        )

    def recall(self, key: str) -> str | None:
        value = self.delivery.store.recall(key)
        return None if value is None else value.decode()

    def recall_items(self, key: str) -> list[str]:
        return [item.decode() for item in self.delivery.store.recall_items(key)]

    def health(self) -> DeliveryHealth:
        return self.delivery.health()

    def status_line(self) -> str:
        return self.delivery.health().status_line(time.time())

    def close(self) -> None:
        self.delivery.close()


def reopened(outlet: Outlet | None, directory: Path, settings: config.Delivery) -> Outlet:
    """The device's outlet for these settings: the same one, or a new one if they changed.

    Raises OutboxUnavailable when the outbox cannot be opened.
    """
    if outlet is not None and outlet.settings == settings:
        return outlet
    if outlet is not None:
        outlet.close()
    return Outlet(directory, settings)


def _encoded(journal: Mapping[str, str | None]) -> dict[str, bytes | None]:
    return {key: None if value is None else value.encode() for key, value in journal.items()}
