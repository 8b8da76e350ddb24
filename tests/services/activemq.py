"""A real Apache ActiveMQ broker for tests (Debian's `activemq` package, run as us).

The broker runs with the project's own config (adapters/activemq.xml) and is stopped or
killed by the PID it was started with, never by name (adapters/activemq.py).
The fixtures `activemq` (one broker for the session) and `activemq_factory` (extra
brokers for a test that kills them) are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import queue
import time

import stomp

from icat_servers.adapters.activemq import ActiveMQ, free_port, port_accepts

__all__ = ["ActiveMQ", "drain", "free_port", "port_accepts"]


def drain(
    port: int,
    destination: str,
    idle: float = 1.0,
    timeout: float = 60.0,
    expect: int | None = None,
    host: str = "127.0.0.1",
    ca_file: str | None = None,
) -> list[tuple[dict[str, str], str]]:
    """Consume everything on a queue: (headers, body) per message, in arrival order.

    Stops when `expect` messages arrived (then waits `idle` more for extras), or when
    nothing arrived for `idle` seconds, or at `timeout`. Acknowledges each message, so
    a later drain does not see it again. With `ca_file`, over TLS (`port` is then the
    broker's stomp+ssl port), the certificate checked against that CA.
    """
    received: queue.Queue[tuple[dict[str, str], str]] = queue.Queue()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: stomp.utils.Frame) -> None:
            received.put((dict(frame.headers), frame.body))

    conn = stomp.Connection12([(host, port)])
    if ca_file is not None:
        conn.set_ssl(for_hosts=[(host, port)], ca_certs=ca_file, verify=True)
    conn.set_listener("drain", Listener())
    conn.connect(wait=True)
    conn.subscribe(destination=destination, id="drain", ack="auto")
    messages: list[tuple[dict[str, str], str]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            wait = idle
            if expect is not None and len(messages) < expect:
                wait = max(0.0, deadline - time.monotonic())
            try:
                messages.append(received.get(timeout=wait))
            except queue.Empty:
                break
    finally:
        with contextlib.suppress(Exception):
            conn.disconnect()
    return messages
