"""Building outbox messages and waiting for delivery in the delivery tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

from icat_servers.adapters.delivery import StompSettings
from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.icatcore import config
from icat_servers.icatcore.outbox import Channel, Kind, OutboxMessage


def icat_message(
    body: bytes | None = None,
    kind: Kind = Kind.DATASET,
    destination: str = "/queue/icatIngest",
    message_id: str | None = None,
) -> OutboxMessage:
    message_id = message_id or str(uuid.uuid4())
    return OutboxMessage(
        id=message_id,
        channel=Channel.ICAT,
        kind=kind,
        destination=destination,
        body=body if body is not None else f"<dataset id='{message_id}'/>".encode(),
        content_type="application/xml",
        created=time.time(),
    )


def logbook_message(
    text: str,
    proposal: str = "hg123",
    beamline: str = "id00",
    message_id: str | None = None,
) -> OutboxMessage:
    """An e-logbook notification addressed as pyicat-plus addresses it."""
    body = {
        "type": "annotation",
        "category": "comment",
        "content": [{"format": "plainText", "text": text}],
        "creationDate": "2024-01-01T00:00:00+00:00",
        "machine": "test",
        "software": "icat-servers",
    }
    return OutboxMessage(
        id=message_id or str(uuid.uuid4()),
        channel=Channel.ICATPLUS,
        kind=Kind.NOTIFICATION,
        destination="dataacquisition/{api_key}/notification",
        body=json.dumps(body).encode(),
        content_type="application/json",
        created=time.time(),
        query=(("investigationName", proposal), ("instrumentName", beamline)),
    )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate`; returns the seconds it took, fails the test on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def wait_empty(store: OutboxStore, timeout: float = 30.0, channel: Channel | None = None) -> float:
    return wait_until(lambda: store.count(channel) == 0, timeout, "the outbox to empty")


def stomp_settings(*urls: str, queue: str, heartbeat_ms: int = 5000) -> StompSettings:
    """The STOMP settings a device with these `queueURLs` and `queueName` would use:
    read by icatcore.config, the one reader, as the devices read them."""
    settings = config.delivery({"queueURLs": list(urls), "queueName": [queue]}, icatplus=False)
    return StompSettings.of(settings, heartbeat_ms=heartbeat_ms)
