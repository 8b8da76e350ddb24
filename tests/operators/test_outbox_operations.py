"""What operators do to an outbox, on the store itself and as the commands present it."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from icat_servers.adapters.icatplus import SecretMask
from icat_servers.adapters.operator_cli import write_export
from icat_servers.adapters.outbox_store import OutboxStore, SetAside
from icat_servers.adapters.tango.outbox_commands import as_sent, export_content, export_name, what
from icat_servers.icatcore import elogbook, messages
from icat_servers.icatcore.outbox import Channel, Kind, icat_message
from icat_servers.icatcore.records import DatasetRecord
from tests.delivery.helpers import logbook_message

KEY = "elogbook-secret-key-0001"


def refused_three(store: OutboxStore) -> list[str]:
    """Three logbook messages set aside, one waiting between them."""
    ids = []
    for i in range(4):
        store.put(logbook_message(f"note {i}", message_id=f"n{i}"))
    for i in (2, 0, 3):  # refused in another order than they were put
        store.set_aside(f"n{i}", f"ICAT+ answered 400 Bad Request ({i})")
        ids.append(f"n{i}")
    return ids


def test_resend_all_puts_set_aside_messages_after_the_waiting_ones_in_order(
    tmp_path: Path,
) -> None:
    store = OutboxStore(tmp_path)
    refused_three(store)
    store.put(logbook_message("later", message_id="later"))
    assert [a.message.id for a in store.set_aside_entries()] == ["n2", "n0", "n3"]
    assert store.resend() == ["n2", "n0", "n3"]
    assert [m.id for m in store.pending(Channel.ICATPLUS, 10)] == ["n1", "later", "n2", "n0", "n3"]
    assert store.set_aside_count() == 0
    assert store.resend() == []


def test_resend_one_moves_only_it_and_an_unknown_id_moves_nothing(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    refused_three(store)
    assert store.resend(["n0"]) == ["n0"]
    assert [a.message.id for a in store.set_aside_entries()] == ["n2", "n3"]
    with pytest.raises(KeyError, match="nope"):
        store.resend(["n2", "nope"])
    assert [a.message.id for a in store.set_aside_entries()] == ["n2", "n3"]
    assert [m.id for m in store.pending(Channel.ICATPLUS, 10)] == ["n1", "n0"]


def test_a_resent_message_survives_a_reopen(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    refused_three(store)
    store.resend(["n3"])
    store.close()
    again = OutboxStore(tmp_path)
    assert [m.id for m in again.pending(Channel.ICATPLUS, 10)] == ["n1", "n3"]
    assert again.set_aside_count() == 2


def test_drop_deletes_only_the_named_message_waiting_or_set_aside(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    refused_three(store)
    assert store.drop("n0") == "set aside"
    assert store.drop("n1") == "waiting"
    with pytest.raises(KeyError):
        store.drop("n1")
    assert [a.message.id for a in store.set_aside_entries()] == ["n2", "n3"]
    assert store.count() == 0


def test_find_tells_waiting_from_set_aside(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    refused_three(store)
    waiting = store.find("n1")
    aside = store.find("n2")
    assert waiting is not None and not isinstance(waiting, SetAside) and waiting.id == "n1"
    assert isinstance(aside, SetAside) and aside.error.endswith("(2)")
    assert store.find("n9") is None


def test_attempts_count_what_the_senders_took(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    store.put(logbook_message("a", message_id="a"))
    store.pending(Channel.ICATPLUS, 1)
    store.pending_after(Channel.ICATPLUS, 0, 1)
    assert store.attempts("a") == 2
    store.confirm("a")
    assert store.attempts("a") == 0


def dataset_message(name: str) -> tuple[str, bytes]:
    dataset = DatasetRecord(
        proposal="hg123",
        beamline="id00",
        name=name,
        location=f"/data/visitor/hg123/id00/{name}",
        sample="lysozyme",
        start=datetime.datetime(2026, 12, 4, 10, 0, tzinfo=datetime.UTC),
        end=datetime.datetime(2026, 12, 4, 10, 1, tzinfo=datetime.UTC),
    )
    return name, messages.dataset_xml(dataset, machine="m", software="s")


def test_a_message_in_words_and_as_sent_hides_the_api_key() -> None:
    note = elogbook.notification_message(
        id="x",
        created=1.0,
        category=elogbook.Category.INFO,
        text="  beam   lost\nat 14:02 " + "x" * 100,
        beamline="id00",
        proposal="hg123",
        dataset_name=None,
        machine="m",
        software="s",
    )
    mask = SecretMask(KEY)
    assert what(note).startswith("beam lost at 14:02 x") and len(what(note)) == 60
    sent = as_sent(note, "https://icatplus.example", mask)
    assert sent["to"].startswith("POST https://icatplus.example/dataacquisition/***/notification?")
    exported = json.loads(export_content(note, mask))
    assert exported["path"] == "/dataacquisition/{api_key}/notification"
    assert exported["body"]["content"][0]["text"].startswith("  beam")
    assert export_name(7, note).endswith("-x.json") and export_name(7, note).startswith("0007-")


def test_a_dataset_is_named_by_its_name_and_exported_as_its_xml(tmp_path: Path) -> None:
    _, xml = dataset_message("sample_0003")
    message = icat_message(
        id="d1", created=1e9, kind=Kind.DATASET, queue="/queue/icatIngest", xml=xml
    )
    assert what(message) == "sample_0003"
    assert export_content(message, SecretMask(KEY)).encode() == xml
    files = [{"name": export_name(1, message), "content": xml.decode(), "created": 1e9}]
    assert write_export(tmp_path, files) == 1
    path = tmp_path / "0001-dataset-sample_0003-d1.xml"
    assert path.read_bytes() == xml and path.stat().st_mtime == 1e9
    assert write_export(tmp_path, files) == 0  # the same export again changes nothing
    with pytest.raises(FileExistsError):
        write_export(tmp_path, [{**files[0], "content": "<other/>"}])
    assert path.read_bytes() == xml
