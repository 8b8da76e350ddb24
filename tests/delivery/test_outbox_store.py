"""The durable outbox on its own: order, confirm, set aside, durability, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pytest

from icat_servers.adapters.outbox_store import OutboxStore, OutboxUnavailable
from icat_servers.icatcore.outbox import Channel, Kind
from tests.delivery.helpers import icat_message, logbook_message

ROOT = Path(__file__).resolve().parents[2]


def test_pending_is_oldest_first_per_channel_and_confirm_removes(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "outbox")
    icat = [icat_message(message_id=f"icat-{i}") for i in range(5)]
    plus = [logbook_message(f"note {i}", message_id=f"plus-{i}") for i in range(3)]
    for a, b in zip(icat, [*plus, None, None], strict=True):
        store.put(a)
        if b is not None:
            store.put(b)
    assert [m.id for m in store.pending(Channel.ICAT, 10)] == [m.id for m in icat]
    assert [m.id for m in store.pending(Channel.ICATPLUS, 10)] == [m.id for m in plus]
    assert [m.id for m in store.pending(Channel.ICAT, 2)] == ["icat-0", "icat-1"]
    assert store.pending(Channel.ICATPLUS, 1)[0] == plus[0]  # every field round-trips
    assert store.count() == 8
    assert store.count(Channel.ICAT) == 5
    assert store.count(Channel.ICAT, Kind.DATASET) == 5
    store.confirm("icat-0")
    store.confirm_many(["icat-2", "plus-0"])
    assert [m.id for m in store.pending(Channel.ICAT, 10)] == ["icat-1", "icat-3", "icat-4"]
    assert store.count() == 5
    assert store.oldest_created(Channel.ICAT) == icat[1].created


def test_putting_the_same_id_twice_keeps_one(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    message = icat_message(message_id="same")
    store.put(message)
    store.put(message)
    assert store.count() == 1


def test_set_aside_keeps_the_message_and_its_refusal(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    refused = logbook_message("bad", message_id="refused")
    store.put(refused)
    store.put(logbook_message("good", message_id="good"))
    store.set_aside("refused", "ICAT+ answered 400 Bad Request")
    assert [m.id for m in store.pending(Channel.ICATPLUS, 10)] == ["good"]
    assert store.set_aside_count() == 1
    assert store.set_aside_messages() == [(refused, "ICAT+ answered 400 Bad Request")]
    store.close()
    assert OutboxStore(tmp_path).set_aside_count() == 1


def test_messages_survive_reopening(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    message = icat_message()
    store.put(message)
    store.close()
    assert OutboxStore(tmp_path).pending(Channel.ICAT, 10) == [message]


def test_empty_outbox_reports_nothing_waiting(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    assert store.count() == 0
    assert store.oldest_created() is None
    assert store.pending(Channel.ICAT, 10) == []


def test_concurrent_puts_from_several_threads_all_stored(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                store.put(icat_message(message_id=f"{n}-{i}"))
                store.count()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = [m.id for m in store.pending(Channel.ICAT, 1000)]
    assert len(ids) == len(set(ids)) == 200
    # each writer's messages keep their order
    assert [i for i in ids if i.startswith("2-")] == [f"2-{i}" for i in range(50)]


def test_journal_items_are_appended_in_order_and_go_with_their_key(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    store.note({"running": b"dataset 1"}, {"running": [b"f1"]})
    store.note({}, {"running": [b"f2", b"f3"]})
    store.note({"running": b"dataset 1, parameters changed"})
    reopened = OutboxStore(tmp_path)
    assert reopened.recall("running") == b"dataset 1, parameters changed"
    assert reopened.recall_items("running") == [b"f1", b"f2", b"f3"]

    store.put(icat_message(message_id="ended"), journal={"running": None})
    assert (store.recall("running"), store.recall_items("running")) == (None, [])
    store.note({"running": b"dataset 2"}, {"running": [b"g1"]})
    assert store.recall_items("running") == [b"g1"]


def test_the_wal_is_checkpointed_and_stays_small(tmp_path: Path) -> None:
    """Checkpoints keep the WAL small, so that its fdatasync stays cheap (no growth)."""
    store = OutboxStore(tmp_path)
    for i in range(1500):
        store.put(icat_message(message_id=f"m{i}", body=b"x" * 8000))
    wal = tmp_path / "outbox.sqlite3-wal"
    assert store.count() == 1500
    assert wal.stat().st_size < 6_000_000, f"WAL grew to {wal.stat().st_size} bytes"


def test_a_failed_note_keeps_none_of_its_items(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    store.note({"running": b"dataset"}, {"running": [b"f1"]})
    with pytest.raises(OutboxUnavailable):
        store.note({"running": b"dataset"}, {"running": [b"f2", None]})  # type: ignore[list-item]
    assert store.recall_items("running") == [b"f1"]


def test_directory_that_cannot_be_created_raises_with_path_and_advice(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the outbox directory should be")
    with pytest.raises(OutboxUnavailable) as raised:
        OutboxStore(blocker / "outbox")
    text = str(raised.value)
    assert str(blocker / "outbox") in text
    assert "writable" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_raises(tmp_path: Path) -> None:  # pragma: no cover - non-root
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(OutboxUnavailable, match="writable"):
            OutboxStore(directory)
    finally:
        directory.chmod(0o700)


def test_outbox_made_read_only_after_opening_raises_on_put(tmp_path: Path) -> None:
    """The file system turns read-only (or the file is replaced): put must not pretend."""
    store = OutboxStore(tmp_path)
    store.put(icat_message())
    # A read-only reopening stands for a file system remounted read-only.
    store.close()
    import sqlite3

    ro = OutboxStore.__new__(OutboxStore)
    ro.path = tmp_path
    ro.db_path = tmp_path / "outbox.sqlite3"
    ro._lock = threading.Lock()
    ro._conn = sqlite3.connect(
        f"file:{ro.db_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    ro._read_lock = threading.Lock()
    ro._reader = ro._conn
    ro._waiting, ro._counts, ro._set_aside = {}, Counter(), 0
    with pytest.raises(OutboxUnavailable) as raised:
        ro.put(icat_message())
    assert str(tmp_path) in str(raised.value)
    assert "writable" in str(raised.value)
    assert ro.known_count() == 0, "a put that failed is not counted"
    assert ro.count() == 1  # the failed put left nothing half-done


FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import resource, signal, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from icat_servers.adapters.outbox_store import OutboxStore, OutboxUnavailable
    from tests.delivery.helpers import icat_message
    store = OutboxStore(Path({path!r}))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Files may not grow past 256 kB: writes beyond fail like on a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
    stored = 0
    try:
        for i in range(1000):
            store.put(icat_message(body=b"x" * 8192))
            stored += 1
    except OutboxUnavailable as error:
        print("STORED", stored)
        print("ERROR", error)
        sys.exit(0)
    print("NO ERROR", stored)
    sys.exit(1)
    """
)


def test_full_disk_raises_outbox_unavailable_and_keeps_what_was_stored(tmp_path: Path) -> None:
    script = FULL_DISK_SCRIPT.format(root=str(ROOT), path=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    stored = int(lines["STORED"])
    assert 0 < stored < 1000
    assert str(tmp_path) in lines["ERROR"]
    assert "disk" in lines["ERROR"]
    # Everything put() acknowledged is still there.
    assert OutboxStore(tmp_path).count() == stored


KILL_AFTER_PUT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from icat_servers.adapters.outbox_store import OutboxStore
    from tests.delivery.helpers import icat_message
    store = OutboxStore(Path({path!r}))
    store.put(icat_message(message_id="survivor", body=b"<dataset/>"))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_message_survives_kill_9_right_after_put(tmp_path: Path) -> None:
    script = KILL_AFTER_PUT_SCRIPT.format(root=str(ROOT), path=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == -9
    [message] = OutboxStore(tmp_path).pending(Channel.ICAT, 10)
    assert (message.id, message.body) == ("survivor", b"<dataset/>")


def test_what_the_process_knows_matches_the_database(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    messages = [icat_message() for _ in range(3)]
    for message in messages:
        store.put(message)
    store.confirm(messages[0].id)
    store.set_aside(messages[1].id, "refused")
    assert (store.known_count(), store.known_set_aside_count()) == (1, 1)
    assert store.known_count() == store.count()
    assert store.known_oldest_created() == store.oldest_created() == messages[2].created
    store.close()
    reopened = OutboxStore(tmp_path)
    assert (reopened.known_count(), reopened.known_set_aside_count()) == (1, 1)
    assert reopened.known_oldest_created() == messages[2].created


def test_resend_and_drop_keep_what_the_process_knows_right(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    first, second, third = (icat_message() for _ in range(3))
    for message in (first, second, third):
        store.put(message)
    store.set_aside(first.id, "refused")
    store.set_aside(second.id, "refused")
    assert (store.known_count(), store.known_set_aside_count()) == (1, 2)
    store.resend([first.id])
    assert (store.known_count(), store.known_set_aside_count()) == (2, 1)
    assert store.known_oldest_created() == store.oldest_created() == first.created
    store.drop(second.id)
    store.drop(third.id)
    assert (store.known_count(), store.known_set_aside_count()) == (1, 0)
    assert (store.count(), store.set_aside_count()) == (1, 0)
