"""The outbox record: one message the device has promised to deliver.

A message is stored before the Tango call that produced it returns, and leaves the
outbox only when its receiver confirmed it. Its `id` is stable across retries and
restarts so that a receiver can recognise a duplicate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum


class Channel(StrEnum):
    ICAT = "icat"
    """XML to the ICAT ingester over STOMP; `destination` is the queue."""
    ICATPLUS = "icatplus"
    """JSON to the ICAT+ REST server; `destination` is the path, `{api_key}` filled at send."""


class Kind(StrEnum):
    DATASET = "dataset"
    INVESTIGATION = "investigation"
    NOTIFICATION = "notification"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: str
    channel: Channel
    kind: Kind
    destination: str
    body: bytes
    content_type: str
    created: float
    """Seconds since the epoch, as the adapter's clock gave it."""
    query: tuple[tuple[str, str], ...] = ()
    """ICAT+ query parameters (proposal, beamline...), in order."""

    def header(self) -> bytes:
        """Everything but the body, as one JSON line: the stored form of the envelope."""
        return json.dumps(
            {
                "id": self.id,
                "channel": self.channel.value,
                "kind": self.kind.value,
                "destination": self.destination,
                "content_type": self.content_type,
                "created": self.created,
                "query": [list(pair) for pair in self.query],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_stored(cls, header: bytes, body: bytes) -> OutboxMessage:
        fields = json.loads(header)
        return cls(
            id=fields["id"],
            channel=Channel(fields["channel"]),
            kind=Kind(fields["kind"]),
            destination=fields["destination"],
            body=body,
            content_type=fields["content_type"],
            created=fields["created"],
            query=tuple((str(k), str(v)) for k, v in fields["query"]),
        )


def icat_message(*, id: str, created: float, kind: Kind, queue: str, xml: bytes) -> OutboxMessage:
    """An ICAT ingester message: XML for the queue named by `queueName`."""
    return OutboxMessage(
        id=id,
        channel=Channel.ICAT,
        kind=kind,
        destination=queue,
        body=xml,
        content_type="application/xml",
        created=created,
    )
