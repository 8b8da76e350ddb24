"""Logbook requests against the ones pyicat-plus's own client makes.

pyicat-plus's `IcatElogbookClient` is driven for real down to its HTTP layer, where
the request (URL with query, headers, JSON body) is captured instead of sent; our
outbox message, with the API key filled in, must make the same request.
"""

from __future__ import annotations

import base64
import datetime
import json
import warnings
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from icat_servers.icatcore.elogbook import (
    Category,
    check_data_url,
    creation_date,
    image_message,
    notification_message,
)
from icat_servers.icatcore.errors import InvalidInput
from icat_servers.icatcore.outbox import Channel, Kind, OutboxMessage

BASE_URL = "http://icatplus.test:8000"
API_KEY = "s3cr3t-key"
MACHINE = "lid00ctrl.esrf.fr"
SOFTWARE = "icat-servers_v1"
CREATED = 1_714_980_000.25  # 2024-05-06T07:20:00.250000+00:00
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()

# The message_type pyicat-plus's users pass for each of our categories.
PYICAT_MESSAGE_TYPE = {
    Category.INFO: "info",
    Category.DEBUG: "debug",
    Category.ERROR: "error",
    Category.COMMAND: "command",
    Category.COMMENT: "comment",
}


class _Captured(Exception):
    pass


def _capture(send: Any) -> dict[str, Any]:
    """Run a pyicat-plus client call, catching the HTTP request it would make.

    Only the tests that compare with pyicat-plus need it: they skip without it.
    """
    elogbook_client = pytest.importorskip("pyicat_plus.client._internal.elogbook")
    captured: dict[str, Any] = {}
    client = elogbook_client.IcatElogbookClient(
        BASE_URL, api_key=API_KEY, machine=MACHINE, software=SOFTWARE
    )

    def request(method: str, url: str, headers: Any = None, body: Any = None, **_: Any) -> None:
        captured.update(method=method, url=url, headers=dict(headers or {}), body=body)
        raise _Captured

    client._data_acquisition_api.api_client.rest_client.request = request
    with warnings.catch_warnings(), pytest.raises(_Captured):
        warnings.simplefilter("ignore")
        send(client)
    return captured


def _request_of(message: OutboxMessage) -> tuple[str, list[tuple[str, str]], Any]:
    path = message.destination.replace("{api_key}", API_KEY)
    return BASE_URL + path, list(message.query), json.loads(message.body)


def _split(url: str) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qsl(parts.query)


@pytest.mark.parametrize("category", list(Category))
@pytest.mark.parametrize(
    ("proposal", "dataset"), [("hg123", "sample_0001"), ("hg123", None), (None, None)]
)
def test_notification_is_the_request_pyicat_plus_makes(
    category: Category, proposal: str | None, dataset: str | None
) -> None:
    text = 'scan "a" <b> & ü\nline 2'
    message = notification_message(
        id="m1",
        created=CREATED,
        category=category,
        text=text,
        beamline="id00",
        proposal=proposal,
        dataset_name=dataset,
        machine=MACHINE,
        software=SOFTWARE,
        tags=("auto", "bliss", "auto"),
    )
    reference = _capture(
        lambda client: client.send_message(
            text,
            message_type=PYICAT_MESSAGE_TYPE[category],
            beamline="id00",
            proposal=proposal,
            dataset=dataset,
            creationDate=creation_date(CREATED),
            tags=["auto", "bliss"],
        )
    )
    url, query, body = _request_of(message)
    assert reference["method"] == "POST"
    assert _split(reference["url"]) == (url, query)
    assert reference["headers"]["Content-Type"] == message.content_type
    assert json.loads(json.dumps(reference["body"])) == body
    assert json.dumps(reference["body"]).encode() == message.body  # same key order too


def test_image_is_the_request_pyicat_plus_makes() -> None:
    raw = base64.b64decode(PNG.split(",", 1)[1])
    message = image_message(
        id="m2",
        created=CREATED,
        data_url=PNG,
        beamline="id00",
        proposal="hg123",
        dataset_name="sample_0001",
        machine=MACHINE,
        software=SOFTWARE,
    )
    reference = _capture(
        lambda client: client.send_binary_data(
            raw, mimetype="image/png", beamline="id00", proposal="hg123"
        )
    )
    url, query, body = _request_of(message)
    assert _split(reference["url"]) == (url, query)
    assert reference["headers"]["Content-Type"] == "application/json"
    assert json.dumps(reference["body"]).encode() == message.body
    assert body == {"base64": PNG, "software": SOFTWARE, "machine": MACHINE}


def test_category_mapping_follows_pyicat_plus() -> None:
    assert [(c.icat_type, c.icat_category) for c in Category] == [
        ("notification", "info"),
        ("notification", "debug"),
        ("notification", "error"),
        ("notification", "commandline"),
        ("annotation", "comment"),
    ]
    assert Category("commandLine") is Category.COMMAND


def test_outbox_envelope_keeps_the_key_out() -> None:
    message = notification_message(
        id="m3",
        created=CREATED,
        category=Category.INFO,
        text="hi",
        beamline="id00",
        proposal="hg123",
        dataset_name=None,
        machine=MACHINE,
        software=SOFTWARE,
    )
    assert message.channel is Channel.ICATPLUS
    assert message.kind is Kind.NOTIFICATION
    assert message.destination == "/dataacquisition/{api_key}/notification"
    assert message.query == (("investigationName", "hg123"), ("instrumentName", "id00"))
    assert message.created == CREATED
    assert "datasetName" not in json.loads(message.body)
    assert OutboxMessage.from_stored(message.header(), message.body) == message


def test_creation_date_is_iso_with_offset() -> None:
    assert creation_date(CREATED) == "2024-05-06T07:20:00.250000+00:00"
    paris = datetime.timezone(datetime.timedelta(hours=2))
    assert creation_date(CREATED, paris) == "2024-05-06T09:20:00.250000+02:00"
    body = json.loads(
        notification_message(
            id="m",
            created=CREATED,
            category=Category.INFO,
            text="x",
            beamline="id00",
            proposal=None,
            dataset_name=None,
            machine="m",
            software="s",
            timezone=paris,
        ).body
    )
    assert body["creationDate"] == "2024-05-06T09:20:00.250000+02:00"


@pytest.mark.parametrize(
    ("data_url", "problem"),
    [
        ("image/png;base64,AAAA", "must start with 'data:'"),
        ("data:image/png,AAAA", "';base64,' is missing"),
        ("data:png;base64,AAAA", "type/subtype"),
        ("data:image/png;base64,", "empty"),
        ("data:image/png;base64,AAA", "not valid base64"),
        ("data:image/png;base64,AA A=", "not valid base64"),
        ("data:image/png;base64,<script>", "not valid base64"),
    ],
)
def test_malformed_data_url_is_refused_with_the_reason(data_url: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        image_message(
            id="m",
            created=CREATED,
            data_url=data_url,
            beamline="id00",
            proposal=None,
            dataset_name=None,
            machine="m",
            software="s",
        )


def test_well_formed_data_urls_are_accepted() -> None:
    assert check_data_url(PNG) == PNG
    assert check_data_url("data:image/svg+xml;charset=utf-8;base64,PHN2Zy8+")


@pytest.mark.parametrize("text", ["a\x00b", "bell\x07", "esc\x1b[31m", "lone \ud800"])
def test_unsendable_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        notification_message(
            id="m",
            created=CREATED,
            category=Category.COMMENT,
            text=text,
            beamline="id00",
            proposal="hg123",
            dataset_name=None,
            machine="m",
            software="s",
        )


def test_multiline_comment_is_kept() -> None:
    body = json.loads(
        notification_message(
            id="m",
            created=CREATED,
            category=Category.COMMENT,
            text="a\n\tb",
            beamline="id00",
            proposal="hg123",
            dataset_name=None,
            machine="m",
            software="s",
        ).body
    )
    assert body["content"] == [{"format": "plainText", "text": "a\n\tb"}]
