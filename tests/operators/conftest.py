"""Operators' tests: the devices of tests/e2e_delivery, the CLI as a process, stand-ins.

- `icatplus_gate`: an HTTP front of pyicat-plus's mock ICAT+ that answers 400 (as ICAT+
  does for a proposal it does not know) until the test "fixes the cause", then passes
  every request through to the mock, which records what it accepted.
- `jolokia`: a stand-in for ActiveMQ's Jolokia agent (Debian's ActiveMQ has none); it
  answers pyicat-plus's ConsumerCount request with `consumers`, and records the paths
  and Authorization headers it was asked with.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.services.icat_mocks import MOCK_API_KEY, IcatPlusMock

CLI = Path(sys.executable).parent / "icat-servers"


def icat_servers(
    args: Sequence[str], tango_host: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`icat-servers ARGS` as a process, as an operator runs it (no terminal: no colour)."""
    return subprocess.run(
        [str(CLI), *args],
        env={**os.environ, "TANGO_HOST": tango_host},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Gate:
    """In front of the mock ICAT+: refuses with 400 while `broken`, else passes through."""

    port: int
    upstream: str
    broken: bool = True
    refused: list[str] = field(default_factory=list)
    api_key: str = MOCK_API_KEY

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def icatplus_gate(icatplus_mock: IcatPlusMock) -> Iterator[Gate]:
    gate = Gate(0, icatplus_mock.base_url)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if gate.broken:
                gate.refused.append(self.path)
                self.answer(400, b"investigation not found")
                return
            forwarded = httpx.post(
                gate.upstream + self.path,
                content=body,
                headers={"content-type": self.headers.get("content-type", "")},
                timeout=10,
            )
            self.answer(forwarded.status_code, forwarded.content)

        def answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    for server in _serve(Handler):
        gate.port = server.server_address[1]
        yield gate


@dataclass
class Jolokia:
    port: int
    consumers: int = 0
    asked: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def jolokia() -> Iterator[Jolokia]:
    stand_in = Jolokia(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stand_in.asked.append((self.path, self.headers.get("authorization", "")))
            expected = "Basic " + base64.b64encode(b"user:user").decode()
            if self.headers.get("authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"value": stand_in.consumers, "status": 200}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    for server in _serve(Handler):
        stand_in.port = server.server_address[1]
        yield stand_in
