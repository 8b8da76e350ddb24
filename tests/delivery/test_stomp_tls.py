"""STOMP over TLS (`ssl://` in queueURLs, `queueCAFile`) against a real ActiveMQ with a
stomp+ssl connector, its certificate signed by a CA this module makes."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from icat_servers.adapters.delivery import Delivery, StompSettings
from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.adapters.stomp_sender import MESSAGE_ID_HEADER
from icat_servers.icatcore import config
from icat_servers.icatcore.outbox import Channel
from tests.delivery.helpers import icat_message, wait_empty, wait_until
from tests.services.activemq import ActiveMQ, drain, free_port
from tests.services.tls import TestCA, make_ca, make_server_certificate


def unique_queue() -> str:
    return f"test.tls.{uuid.uuid4().hex[:12]}"


def tls_settings(*urls: str, queue: str, ca_file: Path | None) -> StompSettings:
    """As a device with these queueURLs, queueName and queueCAFile reads them."""
    properties = {"queueURLs": list(urls), "queueName": [queue]}
    if ca_file is not None:
        properties["queueCAFile"] = [str(ca_file)]
    return StompSettings.of(config.delivery(properties, icatplus=False))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, TestCA, Path]:
    """The CA that signed the broker's certificate, a stranger CA, and the directory."""
    directory = tmp_path_factory.mktemp("tls")
    return make_ca(directory, "broker-ca"), make_ca(directory, "stranger-ca"), directory


@pytest.fixture(scope="module")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, certificates: tuple[TestCA, TestCA, Path]
) -> Iterator[ActiveMQ]:
    """ActiveMQ with a plain and a stomp+ssl connector; killed by its PID at the end."""
    ca, _, directory = certificates
    server = make_server_certificate(ca, directory)
    broker = ActiveMQ(
        tmp_path_factory.mktemp("activemq-tls"), free_port(), server.broker_tls(free_port())
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def tls_port(broker: ActiveMQ) -> int:
    assert broker.tls is not None
    return broker.tls.port


@pytest.mark.slow
def test_dataset_delivered_over_tls_with_the_right_ca(
    tls_broker: ActiveMQ, certificates: tuple[TestCA, TestCA, Path], tmp_path: Path
) -> None:
    ca, _, _ = certificates
    queue = unique_queue()
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, tls_settings(tls_broker.ssl_url, queue=queue, ca_file=ca.cert), None)
    message = icat_message(body=b"<dataset name='over-tls'/>")
    delivery.put(message)
    delivery.start()
    try:
        wait_empty(store, 30)  # the broker's RECEIPT came back over TLS
        health = delivery.health()
    finally:
        delivery.close()
    assert health.broker_connected
    assert health.last_error is None
    assert health.broker_address == f"127.0.0.1:{tls_port(tls_broker)}"
    received = drain(
        tls_port(tls_broker), f"/queue/{queue}", expect=1, idle=0.5, ca_file=str(ca.cert)
    )
    assert [(headers[MESSAGE_ID_HEADER], body) for headers, body in received] == [
        (message.id, "<dataset name='over-tls'/>")
    ]


@pytest.mark.slow
def test_certificate_from_an_unknown_ca_is_refused_in_words_and_the_message_kept(
    tls_broker: ActiveMQ, certificates: tuple[TestCA, TestCA, Path], tmp_path: Path
) -> None:
    _, stranger, _ = certificates
    queue = unique_queue()
    store = OutboxStore(tmp_path)
    delivery = Delivery(
        store, tls_settings(tls_broker.ssl_url, queue=queue, ca_file=stranger.cert), None
    )
    message = icat_message()
    delivery.put(message)
    delivery.start()
    where = f"127.0.0.1:{tls_port(tls_broker)}"
    try:
        wait_until(
            lambda: delivery.health().broker_error is not None, 15, "the refused certificate"
        )
        health = delivery.health()
    finally:
        delivery.close()
    error = health.broker_error
    assert error is not None
    assert error.startswith(f"broker {where}: TLS certificate refused (")
    assert "unable to get local issuer certificate" in error
    assert error.endswith("check queueCAFile")
    assert health.last_error == error
    assert not health.broker_connected
    assert f"1 dataset waiting: {error}" in health.status_line(time.time())
    reopened = OutboxStore(tmp_path)  # kept for the next start
    try:
        assert [m.id for _, m in reopened.pending_after(Channel.ICAT, 0, limit=10)] == [message.id]
    finally:
        reopened.close()
    assert drain(tls_broker.port, f"/queue/{queue}", idle=0.5) == []


@pytest.mark.slow
def test_failover_from_a_plain_entry_to_a_tls_entry(
    tls_broker: ActiveMQ, certificates: tuple[TestCA, TestCA, Path], tmp_path: Path
) -> None:
    ca, _, _ = certificates
    queue = unique_queue()
    store = OutboxStore(tmp_path)
    dead = f"127.0.0.1:{free_port()}"
    delivery = Delivery(
        store, tls_settings(dead, tls_broker.ssl_url, queue=queue, ca_file=ca.cert), None
    )
    message = icat_message()
    delivery.put(message)
    delivery.start()
    try:
        wait_empty(store, 60)
    finally:
        delivery.close()
    received = drain(tls_port(tls_broker), f"/queue/{queue}", expect=1, ca_file=str(ca.cert))
    assert [headers[MESSAGE_ID_HEADER] for headers, _ in received] == [message.id]


def test_certificate_for_another_host_name_is_refused(
    certificates: tuple[TestCA, TestCA, Path], tmp_path: Path
) -> None:
    """A TLS server on loopback whose certificate, signed by the trusted CA, names another
    host: the sender refuses it and says so (no ActiveMQ needed to get that far)."""
    ca, _, _ = certificates
    server = make_server_certificate(
        ca, tmp_path / "other", names=("DNS:broker.invalid",), name="other"
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(5)
            try:
                context.wrap_socket(client, server_side=True).close()
            except (ssl.SSLError, OSError):
                client.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    store = OutboxStore(tmp_path / "outbox")
    delivery = Delivery(
        store,
        tls_settings(f"ssl://127.0.0.1:{port}", queue=unique_queue(), ca_file=ca.cert),
        None,
    )
    delivery.put(icat_message())
    delivery.start()
    try:
        wait_until(lambda: delivery.health().broker_error is not None, 15, "the refusal")
        error = delivery.health().broker_error
        waiting = store.count(Channel.ICAT)
    finally:
        delivery.close()
        stop.set()
        thread.join(5)
        listener.close()
    assert error is not None
    assert error.startswith(f"broker 127.0.0.1:{port}: TLS certificate refused (")
    assert "127.0.0.1" in error.partition("(")[2]  # the host name the certificate lacks
    assert error.endswith("check queueCAFile")
    assert waiting == 1


@pytest.mark.slow
def test_an_ssl_entry_naming_a_plain_stomp_port_is_explained(
    tls_broker: ActiveMQ, certificates: tuple[TestCA, TestCA, Path], tmp_path: Path
) -> None:
    ca, _, _ = certificates
    store = OutboxStore(tmp_path)
    plain_as_tls = f"ssl://127.0.0.1:{tls_broker.port}"
    delivery = Delivery(
        store, tls_settings(plain_as_tls, queue=unique_queue(), ca_file=ca.cert), None
    )
    delivery.put(icat_message())
    delivery.start()
    try:
        wait_until(lambda: delivery.health().broker_error is not None, 20, "the failure")
        error = delivery.health().broker_error
        waiting = store.count(Channel.ICAT)
    finally:
        delivery.close()
    assert error is not None
    # ActiveMQ's plain STOMP connector either answers the TLS hello with a STOMP ERROR
    # (not TLS: "wrong version number") or waits for a frame until the handshake times out.
    assert error.startswith(f"broker 127.0.0.1:{tls_broker.port}: ")
    assert error.endswith(": is it an ssl:// port?")
    assert (
        "TLS handshake failed (WRONG_VERSION_NUMBER)" in error
        or "no TLS handshake within 5 s" in error
    )
    assert waiting == 1
