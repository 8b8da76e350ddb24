"""A local Apache ActiveMQ (Debian's `activemq` package, run as the current user).

For the demo and the tests: the broker runs with the project's own config
(`adapters/activemq.xml`, a template) on loopback, and is stopped or killed by the PID
this module started, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ACTIVEMQ_HOME = Path(os.environ.get("ACTIVEMQ_HOME", "/usr/share/activemq"))
TEMPLATE = Path(__file__).with_name("activemq.xml")
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


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """A STOMP-over-TLS connector: the broker's key and certificate in a PKCS12 keystore."""

    port: int
    keystore: Path
    keystore_password: str = field(repr=False)


class ActiveMQ:
    """One broker process with its data directory under `workdir`; with `tls`, also a
    `stomp+ssl` connector on `tls.port`."""

    def __init__(self, workdir: Path, port: int, tls: BrokerTls | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.tls = tls
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        self.conf_dir = self.workdir / "conf"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "activemq.log"

    @property
    def url(self) -> str:
        """The address as a `queueURLs` entry."""
        return f"{self.host}:{self.port}"

    @property
    def ssl_url(self) -> str:
        """The TLS address as a `queueURLs` entry."""
        if self.tls is None:
            raise RuntimeError("this broker was started without TLS")
        return f"ssl://{self.host}:{self.tls.port}"

    def _ssl_parts(self) -> tuple[str, str]:
        """The `<sslContext>` and the `stomp+ssl` connector, or two empty strings."""
        if self.tls is None:
            return "", ""
        context = (
            "<sslContext><sslContext "
            f'keyStore="file:{self.tls.keystore}" '
            f'keyStorePassword="{self.tls.keystore_password}" keyStoreType="pkcs12"/>'
            "</sslContext>"
        )
        connector = (
            f'<transportConnector name="stomp+ssl" uri="stomp+ssl://127.0.0.1:{self.tls.port}"/>'
        )
        return context, connector

    def _command(self) -> list[str]:
        java = shutil.which("java")
        jar = ACTIVEMQ_HOME / "bin" / "activemq.jar"
        if java is None or not jar.is_file():
            raise RuntimeError(
                f"ActiveMQ needs java and {jar}: install them with "
                "`apt-get install -y activemq default-jre-headless` (scripts/setup does)"
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

    def start(self, detach: bool = False) -> None:
        """Start the broker and return once its STOMP port accepts connections.

        `detach`: in a session of its own, to outlive the command that started it
        (`icat-servers up`), which records its PID for `icat-servers down`.
        """
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"ActiveMQ on port {self.port} is already running")
        if port_accepts(self.port):
            raise RuntimeError(f"port {self.port} is already taken by another process")
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ssl_context, ssl_connector = self._ssl_parts()
        config = (
            TEMPLATE.read_text()
            .replace("<!--@SSL_CONTEXT@-->", ssl_context)
            .replace("<!--@SSL_CONNECTOR@-->", ssl_connector)
            .replace("@PORT@", str(self.port))
            .replace("@DATA_DIR@", str(self.data_dir))
        )
        (self.conf_dir / "activemq.xml").write_text(config)
        command = self._command()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
            )
        deadline = time.monotonic() + START_TIMEOUT
        ports = [self.port] + ([self.tls.port] if self.tls is not None else [])
        while not all(port_accepts(port) for port in ports):
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
