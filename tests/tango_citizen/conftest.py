"""What the Tango tools see of the servers: processes started as a control engineer would."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import tango

from icat_servers.adapters.activemq import free_port
from icat_servers.adapters.processes import start_server

BIN = Path(sys.executable).parent
REFUSAL = "proposal unknown to this ICAT+"


@dataclass
class Process:
    """A device server process reached without a database: `tango://127.0.0.1:PORT/...`."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def proxy(self, device: str) -> tango.DeviceProxy:
        return tango.DeviceProxy(trl(self.port, device))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def trl(port: int, device: str) -> str:
    return f"tango://127.0.0.1:{port}/{device}#dbase=no"


Starter = Callable[..., Process]


def file_database(
    path: Path,
    server: str,
    devices: Mapping[str, Mapping[str, Sequence[str]]],
    class_properties: Mapping[str, Sequence[str]],
) -> Path:
    """A Tango file database, as `-file=` reads it: one server, its devices, properties."""
    executable = server.split("/")[0]
    lines = [f"# SERVER {server}"]
    lines += [f'{server}/DEVICE/{executable}: "{device}"' for device in devices]
    entries = [
        (f"{device}->{name}", values)
        for device, properties in devices.items()
        for name, values in properties.items()
    ]
    entries += [
        (f"CLASS/{executable}->{name}", values) for name, values in class_properties.items()
    ]
    for key, values in entries:
        quoted = [f'"{value}"' for value in values]
        lines.append(f"{key}: " + ",\\\n    ".join(quoted))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def start_without_registry(tmp_path: Path) -> Iterator[Starter]:
    """Start `EXECUTABLE INSTANCE OPTIONS... -ORBendPoint 127.0.0.1:PORT` on loopback.

    `-nodb` or `-file=` servers: the client reaches them by full name with `#dbase=no`.
    Every process it started is killed by its PID at the end.
    """
    started: list[Process] = []

    def start(
        executable: str, instance: str, options: Sequence[str], devices: Sequence[str]
    ) -> Process:
        port = free_port()
        log = tmp_path / f"{executable}-{instance}-{len(started)}.log"
        process = start_server(
            [
                str(BIN / executable),
                instance,
                *options,
                "-ORBendPoint",
                f"giop:tcp:127.0.0.1:{port}",
            ],
            [trl(port, device) for device in devices],
            log,
            {"ICAT_SERVERS_STATE": str(tmp_path / "state")},
        )
        started.append(Process(process, port, log))
        return started[-1]

    try:
        yield start
    finally:
        for process in started:
            process.stop()


class _Refuse(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = REFUSAL.encode()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def refusing_icatplus() -> Iterator[str]:
    """An ICAT+ stand-in on loopback that refuses every message for good (400)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_until(condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s: {what}")
        time.sleep(0.1)
