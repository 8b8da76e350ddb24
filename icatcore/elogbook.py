"""Electronic-logbook messages for ICAT+, as pyicat-plus sends them.

The requests are the ones pyicat-plus's `IcatElogbookClient` makes through the
generated `icat_plus_client` (`/dataacquisition/{apiKey}/notification` and
`/dataacquisition/{apiKey}/base64`), so that ICAT+ sees no difference. They go
through the durable outbox: the API key is a secret, so the stored destination keeps
the literal `{api_key}` placeholder, filled in only when sending.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Iterable
from enum import Enum
from typing import Any

from icat_servers.icatcore.definitions import check_text
from icat_servers.icatcore.errors import InvalidInput
from icat_servers.icatcore.outbox import Channel, Kind, OutboxMessage

NOTIFICATION_PATH = "/dataacquisition/{api_key}/notification"
IMAGE_PATH = "/dataacquisition/{api_key}/base64"
CONTENT_TYPE = "application/json"
MAX_MESSAGE_LENGTH = 1_000_000
MAX_IMAGE_BYTES = 20 * 1024 * 1024


class Category(Enum):
    """The MetadataManager's logbook commands, by the category name the spec gives them."""

    INFO = "info"
    DEBUG = "debug"
    ERROR = "error"
    COMMAND = "commandLine"
    COMMENT = "comment"

    @property
    def icat_category(self) -> str:
        """What pyicat-plus puts in `category` (its enum names: `commandline` lowercase)."""
        return _ICAT_CATEGORY[self]

    @property
    def icat_type(self) -> str:
        """Comments are editable annotations; everything else is a notification."""
        return "annotation" if self is Category.COMMENT else "notification"


_ICAT_CATEGORY = {
    Category.INFO: "info",
    Category.DEBUG: "debug",
    Category.ERROR: "error",
    Category.COMMAND: "commandline",
    Category.COMMENT: "comment",
}


def notification_message(
    *,
    id: str,
    created: float,
    category: Category,
    text: str,
    beamline: str,
    proposal: str | None,
    dataset_name: str | None,
    machine: str,
    software: str,
    tags: Iterable[str] = (),
    timezone: datetime.tzinfo = datetime.UTC,
) -> OutboxMessage:
    """A text message for the proposal logbook, or the beamline's when no proposal."""
    check_text("logbook message", text, max_length=MAX_MESSAGE_LENGTH, multiline=True)
    body: dict[str, Any] = {}
    if dataset_name:
        body["datasetName"] = check_text("dataset name", dataset_name)
    body["type"] = category.icat_type
    tag = _tags(tags)
    if tag:
        body["tag"] = tag
    body["category"] = category.icat_category
    body["content"] = [{"format": "plainText", "text": text}]
    body.update(_sender(machine, software))
    body["creationDate"] = creation_date(created, timezone)
    return _message(id, created, Kind.NOTIFICATION, body, beamline, proposal)


def image_message(
    *,
    id: str,
    created: float,
    data_url: str,
    beamline: str,
    proposal: str | None,
    dataset_name: str | None,
    machine: str,
    software: str,
    tags: Iterable[str] = (),
) -> OutboxMessage:
    """An image for the logbook, from a `data:MIME;base64,...` URL.

    ICAT+'s image request has no dataset or date field: pyicat-plus drops them, so
    does this (`dataset_name` is accepted for symmetry with notifications).
    """
    del dataset_name
    check_data_url(data_url)
    body: dict[str, Any] = {"base64": data_url}
    body.update(_sender(machine, software))
    tag = _tags(tags)
    if tag:
        body["tag"] = tag
    return _message(id, created, Kind.IMAGE, body, beamline, proposal)


def _message(
    id: str, created: float, kind: Kind, body: dict[str, Any], beamline: str, proposal: str | None
) -> OutboxMessage:
    return OutboxMessage(
        id=id,
        channel=Channel.ICATPLUS,
        kind=kind,
        destination=NOTIFICATION_PATH if kind is Kind.NOTIFICATION else IMAGE_PATH,
        body=_json(body),
        content_type=CONTENT_TYPE,
        created=created,
        query=_routing(beamline, proposal),
    )


def creation_date(created: float, timezone: datetime.tzinfo = datetime.UTC) -> str:
    """`creationDate` as pyicat-plus writes it: ISO 8601 with the UTC offset."""
    return datetime.datetime.fromtimestamp(created, tz=timezone).isoformat()


_DATA_URL = re.compile(
    r"data:(?P<mime>[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*)"
    r"(?P<params>(?:;[A-Za-z0-9!#$&^_.+-]+=[A-Za-z0-9!#$&^_.+-]+)*);base64,(?P<data>.*)",
    re.DOTALL,
)


def check_data_url(data_url: str) -> str:
    """Refuse what ICAT+ could not show as an image; says what is wrong."""
    if not isinstance(data_url, str):
        raise InvalidInput("uploadBase64 expects text of the form data:MIME;base64,DATA")
    if len(data_url) > MAX_IMAGE_BYTES * 4 // 3 + 256:
        raise InvalidInput(
            f"uploadBase64: the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB: "
            "send a smaller one"
        )
    if not data_url.startswith("data:"):
        raise InvalidInput(
            "uploadBase64: the text must start with 'data:' (data:MIME;base64,DATA), "
            f"it starts with {data_url[:16]!r}"
        )
    match = _DATA_URL.fullmatch(data_url)
    if match is None:
        if ";base64," not in data_url:
            raise InvalidInput(
                "uploadBase64: ';base64,' is missing: only base64 data URLs are accepted "
                "(data:MIME;base64,DATA)"
            )
        raise InvalidInput(
            "uploadBase64: the MIME type is not of the form type/subtype "
            "(e.g. data:image/png;base64,...)"
        )
    data = match.group("data")
    if not data:
        raise InvalidInput("uploadBase64: the image data after ';base64,' is empty")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "uploadBase64: the data after ';base64,' is not valid base64 (only A-Z a-z 0-9 "
            "+ / and = padding, length a multiple of 4)"
        ) from None
    return data_url


def _tags(tags: Iterable[str]) -> list[dict[str, str]]:
    """pyicat-plus's tag list: each name once, in the order given."""
    result: list[dict[str, str]] = []
    seen: set[str] = set()
    for tag in tags:
        check_text("tag", tag, max_length=255)
        if tag not in seen:
            seen.add(tag)
            result.append({"name": tag})
    return result


def _sender(machine: str, software: str) -> dict[str, str]:
    return {"software": check_text("software", software), "machine": check_text("machine", machine)}


def _routing(beamline: str, proposal: str | None) -> tuple[tuple[str, str], ...]:
    """The query pyicat-plus sends: the proposal's logbook, else the beamline's only."""
    query: list[tuple[str, str]] = []
    if proposal is not None:
        query.append(("investigationName", check_text("proposal", proposal)))
    query.append(("instrumentName", check_text("beamline", beamline)))
    return tuple(query)


def _json(body: dict[str, Any]) -> bytes:
    """Serialized as `icat_plus_client`'s REST layer does: `json.dumps` defaults."""
    return json.dumps(body).encode("ascii")
