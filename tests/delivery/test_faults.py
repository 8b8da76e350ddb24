"""Faults: broker crash, failover, device-server crash. Nothing may be lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from icat_servers.adapters.delivery import Delivery
from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.adapters.stomp_sender import MESSAGE_ID_HEADER
from icat_servers.icatcore.outbox import Channel
from tests.delivery.helpers import icat_message, stomp_settings, wait_empty, wait_until
from tests.services.activemq import ActiveMQ, drain, free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def queue_name() -> str:
    return f"fault.{uuid.uuid4().hex[:12]}"


def test_broker_kill_9_mid_stream_and_restart_after_10_s_loses_nothing(
    activemq_factory: Callable[[], ActiveMQ], tmp_path: Path
) -> None:
    broker = activemq_factory()
    queue = queue_name()
    store = OutboxStore(tmp_path)
    delivery = Delivery(store, stomp_settings(broker.url, queue=queue, heartbeat_ms=1000), None)
    messages = [icat_message(body=f"<dataset n='{i}'/>".encode()) for i in range(200)]
    delivery.start()
    try:
        for message in messages:
            delivery.put(message)
        wait_until(lambda: store.count() <= 150, 30, "some messages delivered")
        broker.kill()
        left_at_kill = store.count()
        wait_until(lambda: not delivery.health().broker_connected, 10, "the link to drop")
        time.sleep(10)
        down = delivery.health()
        assert down.undelivered == store.count() > 0
        broker.start()
        wait_empty(store, 60)
        up = delivery.health()
    finally:
        delivery.close()
    assert 0 < left_at_kill < 200
    assert "waiting: lost the connection to broker" in down.status_line(time.time()) or (
        "refused the connection" in down.status_line(time.time())
    )
    assert up.broker_connected and up.last_error is None
    received = drain(broker.port, f"/queue/{queue}", expect=200, idle=1.0)
    ids = [headers[MESSAGE_ID_HEADER] for headers, _ in received]
    assert set(ids) == {m.id for m in messages}
    duplicates = len(ids) - len(set(ids))
    print(f"\n{len(ids)} received for 200 sent; {duplicates} duplicates (in flight at kill)")
    assert duplicates <= 64  # at most the SENDs that were in flight without receipt


def test_failover_moves_delivery_to_the_second_broker(
    activemq_factory: Callable[[], ActiveMQ], tmp_path: Path
) -> None:
    first, second = activemq_factory(), activemq_factory()
    queue = queue_name()
    store = OutboxStore(tmp_path)
    delivery = Delivery(
        store, stomp_settings(first.url, second.url, queue=queue, heartbeat_ms=1000), None
    )
    delivery.start()
    try:
        before = [icat_message() for _ in range(20)]
        for message in before:
            delivery.put(message)
        wait_empty(store, 30)
        assert delivery.health().broker_address == first.url
        first.kill()
        after = [icat_message() for _ in range(20)]
        for message in after:
            delivery.put(message)
        wait_empty(store, 30)
        health = delivery.health()
    finally:
        delivery.close()
    assert health.broker_connected
    assert health.broker_address == second.url
    on_second = drain(second.port, f"/queue/{queue}", expect=20, idle=0.5)
    assert [h[MESSAGE_ID_HEADER] for h, _ in on_second] == [m.id for m in after]
    first.start()  # its store kept what it confirmed before the crash
    on_first = drain(first.port, f"/queue/{queue}", expect=20, idle=0.5)
    assert [h[MESSAGE_ID_HEADER] for h, _ in on_first] == [m.id for m in before]


CRASH_AFTER_PUT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from icat_servers.adapters.delivery import Delivery
    from icat_servers.adapters.outbox_store import OutboxStore
    from tests.delivery.helpers import icat_message, stomp_settings
    delivery = Delivery(
        OutboxStore(Path({path!r})), stomp_settings({down!r}, queue={queue!r}), None
    )
    delivery.start()
    delivery.put(icat_message(message_id={message_id!r}, body=b"<dataset name='crash'/>"))
    print("PUT RETURNED", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_server_killed_after_put_delivers_after_restart(activemq: ActiveMQ, tmp_path: Path) -> None:
    """kill -9 of the device server after put() returned, before delivery."""
    queue = queue_name()
    message_id = str(uuid.uuid4())
    script = CRASH_AFTER_PUT.format(
        root=str(ROOT),
        path=str(tmp_path),
        down=f"127.0.0.1:{free_port()}",  # broker unreachable: nothing delivered yet
        queue=queue,
        message_id=message_id,
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -9, result.stderr
    assert "PUT RETURNED" in result.stdout
    store = OutboxStore(tmp_path)
    assert [m.id for m in store.pending(Channel.ICAT, 10)] == [message_id]
    delivery = Delivery(store, stomp_settings(activemq.url, queue=queue), None)
    delivery.start()
    try:
        wait_empty(store, 30)
    finally:
        delivery.close()
    received = drain(activemq.port, f"/queue/{queue}", expect=1, idle=0.5)
    assert [(h[MESSAGE_ID_HEADER], body) for h, body in received] == [
        (message_id, "<dataset name='crash'/>")
    ]
