"""The facility side, mocked by pyicat-plus's own test servers, against OUR ActiveMQ.

- `icat_ingester`: pyicat-plus's mock ICAT ingester (servers/stomp_subscriber.py)
  consuming /queue/icatIngest on the session `activemq` broker. It parses every dataset
  and investigation XML as the real ingester would and records it in its IcatDb
  (`data_dir`); `messages` yields each parsed message (a dict).
- `icatplus_mock`: pyicat-plus's mock ICAT+ REST server (servers/icatplus_server.py);
  `messages` yields each e-logbook message it accepted (a dict, with the path fields).

The plugin's code is reused as is (`_mock_backend`, `tcp`, `proc`); nothing is rewritten.
The fixtures (`icat_ingester`, `icatplus_mock` and their session versions) are in
tests/conftest.py.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyicat_plus_pytest_plugin import _mock_backend, proc, tcp

from tests.services.activemq import ActiveMQ

INGEST_QUEUE = "/queue/icatIngest"
MOCK_API_KEY = "elogbook-00000000-0000-0000-0000-000000000000"


def _flush(messages: Any) -> list[Any]:
    flushed = []
    while True:
        try:
            flushed.append(messages.get(timeout=0))
        except queue.Empty:
            return flushed
        except Exception:  # gevent's queue raises its own Empty
            return flushed


def collect(messages: Any, count: int, timeout: float = 30.0) -> list[Any]:
    """Take `count` messages (fewer if the timeout passes first), then any extras."""
    import time

    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            received.append(messages.get(timeout=remaining))
        except Exception:
            break
    received.extend(_flush(messages))
    return received


@dataclass
class IcatIngesterMock:
    """What the ICAT ingester received: parsed messages, and its database directory."""

    messages: Any
    data_dir: Path
    broker: ActiveMQ
    destination: str = INGEST_QUEUE

    def flush(self) -> list[Any]:
        return _flush(self.messages)

    def collect(self, count: int, timeout: float = 30.0) -> list[Any]:
        return collect(self.messages, count, timeout)


@dataclass
class IcatPlusMock:
    """The mock ICAT+ server: its base URL and the logbook messages it accepted."""

    port: int
    messages: Any
    data_dir: Path
    api_key: str = MOCK_API_KEY

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flush(self) -> list[Any]:
        return _flush(self.messages)

    def collect(self, count: int, timeout: float = 30.0) -> list[Any]:
        return collect(self.messages, count, timeout)


@contextmanager
def running_icat_ingester(broker: ActiveMQ, data_dir: Path) -> Iterator[IcatIngesterMock]:
    """The mock ingester consuming INGEST_QUEUE on `broker`, terminated at the end."""
    with tcp.tcp_message_server(validate_all=False) as (port_out, messages):
        process = _mock_backend.start_stomp_subscriber(
            broker.port, port_out, INGEST_QUEUE, data_dir, quiet=True
        )
        try:
            first = messages.get(timeout=30)
            assert first == "LISTENING", f"mock ingester did not start: {first!r}"
            yield IcatIngesterMock(messages, data_dir, broker)
        finally:
            proc.wait_terminate(process)


@contextmanager
def running_icatplus_mock(data_dir: Path) -> Iterator[IcatPlusMock]:
    """pyicat-plus's mock ICAT+, given time to start, terminated at the end.

    The plugin's `start_icatplus_server` waits 5 s for the port; importing the server takes
    3 to 4 s on an idle 2-CPU machine, so under load it timed out (and left the process
    running). Same server and arguments, started with `spawn_server`, waited 60 s.
    """
    with tcp.tcp_message_server("json", validate_all=False) as (port_out, messages):
        port = tcp.get_open_port()
        process = _mock_backend.spawn_server(
            "icatplus_server",
            f"--port={port}",
            f"--port_out={port_out}",
            f"--icat_data_dir={data_dir}",
            quiet=True,
        )
        try:
            tcp.wait_tcp_online("localhost", port, timeout=60)
            first = messages.get(timeout=60)
            assert first == {"STATUS": "LISTENING"}, f"mock ICAT+ did not start: {first!r}"
            yield IcatPlusMock(port, messages, data_dir)
        finally:
            proc.wait_terminate(process)
