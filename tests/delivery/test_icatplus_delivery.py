"""E-logbook messages from the outbox to ICAT+ (pyicat-plus's mock server)."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest

from icat_servers.adapters.delivery import Delivery, IcatPlusSettings
from icat_servers.adapters.icatplus import IcatPlusSender
from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.icatcore.outbox import Channel
from tests.delivery.helpers import logbook_message, wait_empty, wait_until
from tests.services.activemq import free_port
from tests.services.icat_mocks import IcatPlusMock

SECRET = "s3cr3t-K3Y/with+odd&chars"


class FlakyIcatPlus:
    """Answers `failures` POSTs with 503 (or `status`), then forwards to the mock ICAT+."""

    def __init__(self, upstream: str, failures: int, status: int = 503) -> None:
        self.failures = failures
        self.status = status
        self.upstream = upstream
        self.requests: list[tuple[str, int]] = []
        flaky = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if len(flaky.requests) < flaky.failures:
                    flaky.requests.append((self.path, flaky.status))
                    self.send_response(flaky.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = httpx.post(
                    flaky.upstream + self.path,
                    content=body,
                    headers={"Content-Type": self.headers["Content-Type"]},
                )
                flaky.requests.append((self.path, answer.status_code))
                self.send_response(answer.status_code)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_icatplus(icatplus_mock: IcatPlusMock) -> Iterator[FlakyIcatPlus]:
    server = FlakyIcatPlus(icatplus_mock.base_url, failures=0)
    yield server
    server.close()


def texts(received: list[dict[str, object]]) -> list[str]:
    return [str(m["content"][0]["text"]) for m in received]  # type: ignore[index]


def test_logbook_messages_arrive_in_order(icatplus_mock: IcatPlusMock, tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    delivery = Delivery(
        store, None, IcatPlusSettings(icatplus_mock.base_url, icatplus_mock.api_key)
    )
    delivery.start()
    try:
        for i in range(10):
            delivery.put(logbook_message(f"note {i}", proposal="hg123", beamline="id00"))
        wait_empty(store, 30)
        health = delivery.health()
    finally:
        delivery.close()
    received = icatplus_mock.collect(10, timeout=10)
    assert texts(received) == [f"note {i}" for i in range(10)]
    assert {(m["investigation"], m["instrument"], m["apikey"]) for m in received} == {
        ("hg123", "id00", icatplus_mock.api_key)
    }
    assert health.undelivered == 0 and health.last_error is None


def test_refused_message_is_set_aside_and_later_ones_still_arrive(
    icatplus_mock: IcatPlusMock, tmp_path: Path
) -> None:
    """The mock ICAT+ answers 400 to proposals containing 666."""
    store = OutboxStore(tmp_path)
    delivery = Delivery(
        store, None, IcatPlusSettings(icatplus_mock.base_url, icatplus_mock.api_key)
    )
    delivery.start()
    try:
        refused = logbook_message("refused", proposal="hg666")
        delivery.put(refused)
        delivery.put(logbook_message("accepted"))
        wait_empty(store, 30)
        health = delivery.health()
    finally:
        delivery.close()
    assert texts(icatplus_mock.collect(1, timeout=10)) == ["accepted"]
    assert health.set_aside == 1
    assert "1 logbook message refused by ICAT+ and set aside" in health.status_line(time.time())
    [(kept, error)] = OutboxStore(tmp_path).set_aside_messages()
    assert kept == refused
    assert "400" in error


def test_transient_failures_are_retried_in_order(
    flaky_icatplus: FlakyIcatPlus, icatplus_mock: IcatPlusMock, tmp_path: Path
) -> None:
    flaky_icatplus.failures = 4
    store = OutboxStore(tmp_path)
    sender = IcatPlusSender(store, flaky_icatplus.url, icatplus_mock.api_key, max_delay=0.2)
    for i in range(3):
        store.put(logbook_message(f"note {i}"))
    sender.start()
    try:
        wait_empty(store, 30)
    finally:
        sender.stop()
    assert [status for _, status in flaky_icatplus.requests] == [503] * 4 + [200] * 3
    assert texts(icatplus_mock.collect(3, timeout=10)) == ["note 0", "note 1", "note 2"]


@pytest.mark.slow
def test_icatplus_outage_then_recovery_delivers_all_in_order(
    flaky_icatplus: FlakyIcatPlus, icatplus_mock: IcatPlusMock, tmp_path: Path
) -> None:
    """503 for a while (about 8 s of backoff), then 200: all 30 arrive, in order."""
    flaky_icatplus.failures = 8
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, None, IcatPlusSettings(flaky_icatplus.url, icatplus_mock.api_key))
    delivery.start()
    try:
        for i in range(30):
            delivery.put(logbook_message(f"note {i}"))
        wait_until(lambda: delivery.health().last_error is not None, 10, "the outage")
        during = delivery.health()
        wait_empty(store, 120)
    finally:
        delivery.close()
    assert during.icatplus_waiting > 0
    assert "answered 503" in during.status_line(time.time())
    assert texts(icatplus_mock.collect(30, timeout=10)) == [f"note {i}" for i in range(30)]
    assert [s for _, s in flaky_icatplus.requests] == [503] * 8 + [200] * 30


def test_api_key_never_appears_in_logs_health_or_errors(
    flaky_icatplus: FlakyIcatPlus,
    icatplus_mock: IcatPlusMock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every text produced while delivering, failing and refusing is free of the key."""
    caplog.set_level(logging.DEBUG)
    produced: list[str] = []
    # 1. ICAT+ unreachable (connection refused): errors name the URL
    dead = f"http://127.0.0.1:{free_port()}"
    store = OutboxStore(tmp_path / "dead")
    delivery = Delivery(store, None, IcatPlusSettings(dead, SECRET))
    produced.append(repr(delivery.icatplus_settings))
    delivery.start()
    try:
        delivery.put(logbook_message("unreachable"))
        wait_until(lambda: delivery.health().last_error is not None, 10, "an error")
        health = delivery.health()
        produced += [str(health), health.status_line(time.time())]
    finally:
        delivery.close()
    assert health.last_error is not None and dead in health.last_error
    # 2. 503, then 200, then a 400 refusal (set aside with its error text)
    flaky_icatplus.failures = 2
    store = OutboxStore(tmp_path / "flaky")
    delivery = Delivery(store, None, IcatPlusSettings(flaky_icatplus.url, SECRET))
    delivery.start()
    try:
        delivery.put(logbook_message("ok"))
        delivery.put(logbook_message("refused", proposal="hg666"))
        wait_empty(store, 30)
        health = delivery.health()
        produced += [str(health), health.status_line(time.time())]
        produced += [error for _, error in store.set_aside_messages()]
    finally:
        delivery.close()
    assert health.set_aside == 1
    # the mock did receive the key (URL-encoded in the path): it was really used
    assert [unquote(m["apikey"]) for m in icatplus_mock.collect(1, timeout=10)] == [SECRET]
    produced += [record.getMessage() for record in caplog.records]
    produced += [caplog.text]
    assert any("POST" in text for text in produced), "httpx request logs were captured"
    assert any("503" in text for text in produced)
    leaks = [t for t in produced if SECRET in t or quote(SECRET, safe="") in t]
    assert leaks == []
    assert "***" in caplog.text


def test_empty_icatplus_server_keeps_logbook_messages(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, None, IcatPlusSettings("", SECRET))
    delivery.start()
    try:
        delivery.put(logbook_message("kept"))
        health = delivery.health()
    finally:
        delivery.close()
    assert health.icatplus_waiting == 1
    assert "e-logbook delivery is off: icatplus_server is empty" in health.status_line(0)
    assert OutboxStore(tmp_path).count(Channel.ICATPLUS) == 1


def test_body_and_query_are_sent_as_stored(icatplus_mock: IcatPlusMock, tmp_path: Path) -> None:
    store = OutboxStore(tmp_path)
    message = logbook_message("exact", proposal="ab1234", beamline="bm01")
    store.put(message)
    sender = IcatPlusSender(store, icatplus_mock.base_url + "/", icatplus_mock.api_key)
    sender.start()
    try:
        wait_empty(store, 30)
    finally:
        sender.stop()
    [received] = icatplus_mock.collect(1, timeout=10)
    expected = json.loads(message.body)
    assert {k: received[k] for k in expected} == expected
    assert (received["investigation"], received["instrument"]) == ("ab1234", "bm01")
