"""ICAT messages from the outbox to a real ActiveMQ (and the mock ICAT ingester)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyicat_plus._icat_messaging.serializers.dataset import serialize_dataset_message
from pyicat_plus._icat_messaging.serializers.investigation import (
    serialize_investigation_message,
)
from pyicat_plus_pytest_plugin.servers.icat_db import IcatDb

from icat_servers.adapters.delivery import Delivery
from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.adapters.stomp_sender import MESSAGE_ID_HEADER
from icat_servers.icatcore.outbox import Channel, Kind
from tests.delivery.helpers import icat_message, stomp_settings, wait_empty, wait_until
from tests.services.activemq import ActiveMQ, drain, free_port
from tests.services.icat_mocks import IcatIngesterMock


def unique_queue() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


def test_messages_arrive_exactly_once_per_id(activemq: ActiveMQ, tmp_path: Path) -> None:
    queue = unique_queue()
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, stomp_settings(activemq.url, queue=queue), None)
    delivery.start()
    sent = {}
    try:
        for i in range(100):
            message = icat_message(body=f"<dataset n='{i}'/>".encode())
            sent[message.id] = message.body.decode()
            delivery.put(message)
        seconds = wait_empty(store, 60)
        health = delivery.health()
    finally:
        delivery.close()
    print(f"\n100 messages delivered with receipts in {seconds:.2f} s")
    received = drain(activemq.port, f"/queue/{queue}", expect=100, idle=0.5)
    ids = [headers[MESSAGE_ID_HEADER] for headers, _ in received]
    assert len(received) == 100
    assert sorted(ids) == sorted(sent)
    assert {headers[MESSAGE_ID_HEADER]: body for headers, body in received} == sent
    assert ids == list(sent)  # oldest first
    assert all(headers["persistent"] == "true" for headers, _ in received)
    assert all("content-length" not in headers for headers, _ in received)
    assert health.undelivered == 0
    assert health.broker_connected
    assert health.last_error is None
    assert health.status_line(time.time()) == "all messages delivered"


def test_put_to_receipt_latency_is_small(activemq: ActiveMQ, tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, stomp_settings(activemq.url, queue=unique_queue()), None)
    delivery.start()
    try:
        wait_until(lambda: delivery.health().broker_connected, 10, "the broker link")
        latencies = []
        for _ in range(20):
            start = time.perf_counter()
            delivery.put(icat_message())
            wait_empty(store, 10)
            latencies.append(time.perf_counter() - start)
    finally:
        delivery.close()
    latencies.sort()
    print(f"\nput -> receipt -> confirmed: median {latencies[10] * 1e3:.1f} ms")
    assert latencies[10] < 0.5  # woken by put, not by the 1 s poll


def test_dataset_reaches_the_mock_icat_ingester(
    icat_ingester: IcatIngesterMock, tmp_path: Path
) -> None:
    """Real pyicat-plus XML through our outbox and ActiveMQ to pyicat-plus's ingester."""
    proposal = f"hg{uuid.uuid4().int % 10**6}"
    investigation = serialize_investigation_message(
        beamline="id00", proposal=proposal, start_datetime="2024-01-01T10:00:00+01:00"
    )
    dataset = serialize_dataset_message(
        beamline="id00",
        proposal=proposal,
        dataset="sample1_0001",
        path=str(tmp_path / "data"),
        metadata={
            "startDate": "2024-01-01T11:00:00+01:00",
            "endDate": "2024-01-01T11:05:00+01:00",
            "Sample_name": "sample1",
        },
    )
    store = OutboxStore(tmp_path / "outbox")
    delivery = Delivery(store, stomp_settings(icat_ingester.broker.url, queue="icatIngest"), None)
    delivery.start()
    try:
        delivery.put(icat_message(body=investigation, kind=Kind.INVESTIGATION))
        delivery.put(icat_message(body=dataset, kind=Kind.DATASET))
        wait_empty(store, 30)
    finally:
        delivery.close()
    received = icat_ingester.collect(2, timeout=30)
    assert len(received) == 2
    assert received[0]["experiment"] == proposal
    assert received[1]["name"] == "sample1_0001"
    assert received[1]["investigation"] == proposal
    # what the mock ICAT recorded, read back through its own database
    db = IcatDb(icat_ingester.data_dir)
    [recorded] = [i for i in db.get_all_investigations() if i["proposal"] == proposal]
    [stored] = db.get_datasets(recorded["id"])
    assert stored["name"] == "sample1_0001"
    assert stored["location"] == str(tmp_path / "data")


def test_empty_queue_urls_keeps_messages_and_says_delivery_is_off(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, stomp_settings("", queue="icatIngest"), None)
    delivery.start()
    try:
        assert delivery.stomp_sender is None
        delivery.put(icat_message())
        health = delivery.health()
    finally:
        delivery.close()
    assert health.undelivered == health.undelivered_datasets == 1
    assert not health.broker_connected
    assert health.status_line(time.time()).startswith(
        "ICAT delivery is off: queueURLs is empty; 1 dataset kept in the outbox"
    )
    assert OutboxStore(tmp_path).count() == 1


def test_broker_down_is_reported_in_words_and_nothing_is_lost(tmp_path: Path) -> None:
    port = free_port()  # nobody listens
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, stomp_settings(f"127.0.0.1:{port}", queue="q"), None)
    delivery.start()
    try:
        delivery.put(icat_message())
        delivery.put(icat_message())
        wait_until(lambda: delivery.health().last_error is not None, 10, "an error")
        health = delivery.health()
    finally:
        delivery.close()
    line = health.status_line(health.oldest_created or 0.0)
    assert line.startswith(
        f"2 datasets waiting: broker 127.0.0.1:{port} refused the connection since "
    )
    assert not health.broker_connected
    assert health.undelivered_datasets == 2
    assert OutboxStore(tmp_path).count(Channel.ICAT) == 2


class FakeBroker:
    """Just enough STOMP to hold back RECEIPTs: shows when the sender confirms."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sends: list[dict[str, str]] = []
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:  # the sender's TCP probe comes first and closes at once
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        buffer = b""
        pending_receipts: list[str] = []
        conn.settimeout(0.05)
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                except TimeoutError:
                    pass
                except OSError:
                    return
                while b"\0" in buffer:
                    raw, buffer = buffer.split(b"\0", 1)
                    head = raw.lstrip(b"\r\n").split(b"\n\n", 1)[0].decode()
                    command, *lines = head.split("\n")
                    headers = dict(line.split(":", 1) for line in lines if ":" in line)
                    if command in ("CONNECT", "STOMP"):
                        conn.sendall(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    elif command == "SEND":
                        self.sends.append(headers)
                        pending_receipts.append(headers["receipt"])
                    elif command == "DISCONNECT":
                        return
                if self.release.is_set() and pending_receipts:
                    for receipt in pending_receipts:
                        conn.sendall(f"RECEIPT\nreceipt-id:{receipt}\n\n\0".encode())
                    pending_receipts.clear()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_broker() -> Iterator[FakeBroker]:
    broker = FakeBroker()
    yield broker
    broker.close()


def test_message_stays_in_the_outbox_until_its_receipt(
    fake_broker: FakeBroker, tmp_path: Path
) -> None:
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, stomp_settings(f"127.0.0.1:{fake_broker.port}", queue="q"), None)
    delivery.start()
    try:
        message = icat_message()
        delivery.put(message)
        wait_until(lambda: len(fake_broker.sends) == 1, 10, "the SEND")
        assert fake_broker.sends[0][MESSAGE_ID_HEADER] == message.id
        assert fake_broker.sends[0]["persistent"] == "true"
        time.sleep(0.3)  # time enough to confirm, were it to confirm without receipt
        assert [m.id for m in store.pending(Channel.ICAT, 10)] == [message.id]
        assert delivery.health().undelivered == 1
        fake_broker.release.set()
        wait_empty(store, 10)
        assert len(fake_broker.sends) == 1
    finally:
        delivery.close()
