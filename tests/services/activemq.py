"""A real Apache ActiveMQ broker for tests (Debian's `activemq` package, run as us).

The broker is started with the project's own config (tests/services/activemq/activemq.xml,
a template) and stopped or killed by the PID this module started, never by name.
Fixtures: `activemq` (one broker for the session) and `activemq_factory` (extra brokers
for a test that kills them).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import stomp

ACTIVEMQ_HOME = Path(os.environ.get("ACTIVEMQ_HOME", "/usr/share/activemq"))
TEMPLATE = Path(__file__).with_name("activemq") / "activemq.xml"
START_TIMEOUT = 60.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.connect((host, port))
        except OSError:
            return False
        return True


class ActiveMQ:
    """One broker process with its data directory under `workdir`."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        self.conf_dir = self.workdir / "conf"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "activemq.log"

    @property
    def url(self) -> str:
        """The address as a `queueURLs` entry."""
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        java = shutil.which("java")
        jar = ACTIVEMQ_HOME / "bin" / "activemq.jar"
        if java is None or not jar.is_file():
            pytest.fail(
                f"ActiveMQ tests need java and {jar}: install them with "
                "`apt-get install -y activemq default-jre-headless`",
                pytrace=False,
            )
        return [
            java,
            "-Xms64M",
            "-Xmx256M",
            f"-Dactivemq.home={ACTIVEMQ_HOME}",
            f"-Dactivemq.base={self.workdir}",
            f"-Dactivemq.conf={self.conf_dir}",
            f"-Dactivemq.data={self.data_dir}",
            f"-Djava.io.tmpdir={self.data_dir}",
            "-jar",
            str(jar),
            "start",
            f"xbean:file:{self.conf_dir / 'activemq.xml'}",
        ]

    def start(self) -> None:
        """Start the broker and return once its STOMP port accepts connections."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"ActiveMQ on port {self.port} is already running")
        if port_accepts(self.port):
            raise RuntimeError(f"port {self.port} is already taken by another process")
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = (
            TEMPLATE.read_text()
            .replace("@PORT@", str(self.port))
            .replace("@DATA_DIR@", str(self.data_dir))
        )
        (self.conf_dir / "activemq.xml").write_text(config)
        command = self._command()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_accepts(self.port):
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(
                    f"ActiveMQ exited with {self.process.returncode} before listening on "
                    f"{self.port}; log {self.log_path}:\n{tail}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"ActiveMQ did not listen on {self.port} within {START_TIMEOUT} s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9 the broker we started (a crash: no clean shutdown)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """Orderly shutdown (SIGTERM), kill -9 if it does not stop in time."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.process = None

    def restart(self) -> None:
        """Crash and come back on the same port with the same data."""
        self.kill()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def drain(
    port: int,
    destination: str,
    idle: float = 1.0,
    timeout: float = 60.0,
    expect: int | None = None,
    host: str = "127.0.0.1",
) -> list[tuple[dict[str, str], str]]:
    """Consume everything on a queue: (headers, body) per message, in arrival order.

    Stops when `expect` messages arrived (then waits `idle` more for extras), or when
    nothing arrived for `idle` seconds, or at `timeout`. Acknowledges each message, so
    a later drain does not see it again.
    """
    received: queue.Queue[tuple[dict[str, str], str]] = queue.Queue()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: stomp.utils.Frame) -> None:
            received.put((dict(frame.headers), frame.body))

    conn = stomp.Connection12([(host, port)])
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


@pytest.fixture(scope="session")
def activemq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveMQ]:
    """One ActiveMQ broker on a free loopback port for the whole session.

    Tests that kill a broker use `activemq_factory` instead, so that this one stays up.
    """
    broker = ActiveMQ(tmp_path_factory.mktemp("activemq"), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def activemq_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], ActiveMQ]]:
    """Make and start extra brokers: `activemq_factory()` returns a started ActiveMQ.

    Every broker it made is killed (by PID) at the end of the test.
    """
    brokers: list[ActiveMQ] = []

    def make() -> ActiveMQ:
        broker = ActiveMQ(tmp_path_factory.mktemp("activemq"), free_port())
        brokers.append(broker)
        broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.kill()
