"""The two device servers as real processes, started from their console scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tango

from icat_servers.adapters.processes import start_server

BIN = Path(sys.executable).parent


@dataclass
class Server:
    """One device server process: started by its console script, stopped by its PID.

    `start()` returns once every device in `devices` answers a ping and a State read;
    `kill()` is `kill -9` of the PID it started (a no-op when it is not running);
    `restart()` is both. The instance, environment and log file stay the same, so a
    restarted server finds its devices, properties and outbox again.
    """

    executable: str
    instance: str
    tango_host: str
    log: Path
    devices: Sequence[str]
    environment: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    options: Sequence[str] = ()
    """Extra command-line options, e.g. Tango's `-v4`."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    def start(self, timeout: float = 30.0) -> None:
        self.process = start_server(
            [str(BIN / self.executable), self.instance, *self.options],
            [f"tango://{self.tango_host}/{device}" for device in self.devices],
            self.log,
            {**self.environment, "TANGO_HOST": self.tango_host},
            timeout,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


def register(
    tango_host: str,
    server: str,
    device_class: str,
    devices: Mapping[str, Mapping[str, Sequence[str]]],
    class_properties: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Put devices and properties in the database, as `icat-servers register` would.

    Also sets TANGO_HOST in this process's environment, so that `tango.DeviceProxy(name)`
    and `tango.Database()` find the same database.
    """
    os.environ["TANGO_HOST"] = tango_host
    host, port = tango_host.rsplit(":", 1)
    database = tango.Database(host, int(port))
    for name, properties in devices.items():
        info = tango.DbDevInfo()
        info.name, info._class, info.server = name, device_class, server
        database.add_device(info)
        if properties:
            database.put_device_property(name, {k: list(v) for k, v in properties.items()})
    if class_properties:
        database.put_class_property(device_class, {k: list(v) for k, v in class_properties.items()})
