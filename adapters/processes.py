"""Processes we start and later stop by PID: device servers, a broker, recorded in a state dir.

A PID alone is not an identity: once a process ends, the system may give its PID to
another program. A recorded process is therefore (PID, start time since boot); it is
signalled only while both still match, so `icat-servers down` can never stop a process
it did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tango


def start_server(
    argv: Sequence[str],
    devices: Sequence[str],
    log: Path,
    environment: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start `argv` with its output in `log`; return once every device answers.

    The process runs in a session of its own: it outlives the command that started it
    and a Ctrl-C meant for that command.
    """
    env = {**os.environ, **(environment or {})}
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    tango_host = env.get("TANGO_HOST", "")
    deadline = time.monotonic() + timeout
    for device in devices:
        # the full name: this process's own TANGO_HOST may name another database
        qualified = "://" in device or "#" in device
        full_name = f"tango://{tango_host}/{device}" if tango_host and not qualified else device
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode}: see {log}")
            try:
                proxy = tango.DeviceProxy(full_name)
                proxy.ping()
                proxy.state()
                break
            except tango.DevFailed:
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    raise RuntimeError(
                        f"{device} did not answer in {timeout} s: see {log}"
                    ) from None
                time.sleep(0.1)
    return process


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), None if no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] in ("Z", "X"):  # a zombie has finished: nothing left to stop
        return None
    return int(fields[19])  # field 22 of proc(5), counted after "pid (comm)"


@dataclass(frozen=True)
class Recorded:
    """A process we started, as written down in a state dir."""

    name: str
    pid: int
    started: int

    @classmethod
    def of(cls, name: str, pid: int) -> Recorded:
        started = start_time(pid)
        if started is None:
            raise RuntimeError(f"{name} (pid {pid}) ended right after it started")
        return cls(name, pid, started)

    @classmethod
    def from_json(cls, raw: Any) -> Recorded | None:
        if not isinstance(raw, dict):
            return None
        name, pid, started = raw.get("name"), raw.get("pid"), raw.get("started")
        if isinstance(name, str) and isinstance(pid, int) and isinstance(started, int):
            return cls(name, pid, started)
        return None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "started": self.started}

    def alive(self) -> bool:
        """Still the process we started (not a new one that got its PID)."""
        return start_time(self.pid) == self.started

    def stop(self, grace: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after `grace` s; False if it was no longer running."""
        if not self.alive():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if self._gone_within(grace):
            return True
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if not self._gone_within(grace):
            raise RuntimeError(f"{self.name} (pid {self.pid}) did not stop")
        return True

    def _gone_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)  # reap it if it is our child
            if not self.alive():
                return True
            time.sleep(0.05)
        return False
