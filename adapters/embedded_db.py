"""An embedded Tango database (pytango-db) for machines with no TANGO_HOST.

A laptop, a CI runner or a demo has no facility Tango database, yet the ICAT
servers need one to find their devices and properties. pytango-db is a real
Tango database in one Python process, storing into one sqlite file; this module
starts it on loopback, remembers its PID and port in a state directory so that
later commands reuse it, and stops it by PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
"""Loopback only: the embedded database is for this machine, never the network."""

INSTANCE = "2"
"""The DataBaseds instance name Tango uses by convention (sys/database/2)."""

STATE_FILE = "database.json"
LOCK_FILE = "database.lock"
LOG_FILE = "databaseds.log"
DB_FILE = "tango_database.db"

_LISTENING = re.compile(r"Database DS listening on:.*port=(\d+)\.")


def default_state_dir() -> Path:
    """Where the embedded database lives: $ICAT_SERVERS_STATE, else ~/.local/state/icat-servers."""
    configured = os.environ.get("ICAT_SERVERS_STATE", "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "state" / "icat-servers"


class EmbeddedDatabaseError(RuntimeError):
    """The embedded database could not be started, reached or stopped."""


@dataclass(frozen=True)
class RunningDatabase:
    """A database process this state directory knows about."""

    pid: int
    port: int

    @property
    def tango_host(self) -> str:
        return f"{HOST}:{self.port}"


class EmbeddedDatabase:
    """A pytango-db database on loopback whose PID and port are kept in `state_dir`.

    `port=None` reuses the port remembered from an earlier run when it is free
    (so a TANGO_HOST written down earlier, and the servers that use it, stay
    right), otherwise picks a free one below the system's ephemeral range.

    The database is always given an explicit port: omniORB then binds it with
    SO_REUSEADDR, so the connections a stopped database leaves behind (TIME_WAIT,
    FIN-WAIT-2 while a client still holds its end) do not keep the next start off
    its port. With port 0 omniORB binds without it, and a restart had to move.
    """

    def __init__(
        self, state_dir: Path, port: int | None = None, startup_timeout: float = 20.0
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    # -- public -----------------------------------------------------------------

    def start(self) -> str:
        """Start the database (or reuse the running one) and return its TANGO_HOST.

        Returns only once the database answers Tango requests.
        """
        return self.start_or_reuse()[0].tango_host

    def start_or_reuse(self) -> tuple[RunningDatabase, bool]:
        """The running database, and whether this call started it (False: it already ran)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            running = self._running()
            stuck = self._read_state().get("pid")
            if running is None and stuck is not None and self._is_our_process(stuck):
                raise EmbeddedDatabaseError(
                    f"the embedded database (pid {stuck}) runs but does not answer; see "
                    f"{self.log_file}, then stop it (icat-servers database stop) and start again"
                )
            if running is not None:
                if self.port is not None and self.port != running.port:
                    raise EmbeddedDatabaseError(
                        f"the embedded database in {self.state_dir} already runs on port "
                        f"{running.port} (pid {running.pid}), not {self.port}: stop it first "
                        "(icat-servers database stop) or use that port"
                    )
                return running, False
            return self._spawn(), True

    def stop(self) -> int | None:
        """Stop the recorded database process by PID; return that PID, or None if none ran."""
        if not self.state_dir.exists():
            return None
        with self._locked():
            state = self._read_state()
            pid = state.get("pid")
            if not isinstance(pid, int) or not self._is_our_process(pid):
                self._write_state(port=state.get("port"), pid=None)
                return None
            self._terminate(pid)
            self._write_state(port=state.get("port"), pid=None)
            return pid

    def status(self) -> RunningDatabase | None:
        """The running database if its process is alive and it answers, else None."""
        if not self.state_dir.exists():
            return None
        return self._running()

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_FILE

    # -- state ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop between concurrent commands sharing one state dir."""
        with open(self.state_dir / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, int | None]:
        path = self.state_dir / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in raw.items() if k in ("pid", "port") and isinstance(v, int)}

    def _write_state(self, *, port: int | None, pid: int | None) -> None:
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "port": port, "host": HOST}) + "\n")
        tmp.replace(path)

    def _running(self) -> RunningDatabase | None:
        state = self._read_state()
        pid, port = state.get("pid"), state.get("port")
        if pid is None or port is None:
            return None
        if not self._is_our_process(pid) or not _answers(port, timeout=3.0):
            return None
        return RunningDatabase(pid=pid, port=port)

    # -- process ------------------------------------------------------------------

    def _choose_port(self) -> int:
        if self.port is not None:
            if not _port_is_free(self.port):
                raise EmbeddedDatabaseError(
                    f"port {self.port} on {HOST} is in use: choose another port, "
                    "or give none to let the system pick a free one"
                )
            return self.port
        remembered = self._read_state().get("port")
        if remembered and _port_is_free(remembered):
            return remembered
        if remembered:
            print(
                f"the embedded database's port {remembered} is taken by another program: "
                "moving to another port (servers started with the old TANGO_HOST must be "
                "restarted)",
                file=sys.stderr,
            )
        return _free_port_below_ephemeral(self.state_dir)

    def _spawn(self) -> RunningDatabase:
        port = self._choose_port()
        env = dict(os.environ)
        env.pop("TANGO_HOST", None)
        env["PYTANGO_DATABASE_NAME"] = str(self.state_dir / DB_FILE)
        command = [sys.executable, "-m", "databaseds.database", "--print-host-port"]
        command += ["--host", HOST, "--port", str(port), INSTANCE]
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,  # outlives the command that started it
            )
        self._process = process
        try:
            actual = self._wait_until_answering(process, port, log_start)
        except BaseException:
            self._terminate(process.pid)
            raise
        self._write_state(port=actual, pid=process.pid)
        return RunningDatabase(pid=process.pid, port=actual)

    def _wait_until_answering(
        self, process: subprocess.Popen[bytes], port: int, log_start: int
    ) -> int:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedDatabaseError(
                    f"the embedded Tango database exited with code {process.returncode} "
                    f"while starting; its output:\n{self._log_since(log_start)}"
                )
            if port == 0:
                match = _LISTENING.search(self._log_since(log_start))
                if match:
                    port = int(match.group(1))
            if port != 0 and _answers(port, timeout=1.0):
                return port
            time.sleep(0.05)
        raise EmbeddedDatabaseError(
            f"the embedded Tango database did not answer within {self.startup_timeout:.0f} s; "
            f"its output (also in {self.log_file}):\n{self._log_since(log_start)}"
        )

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _is_our_process(self, pid: int) -> bool:
        """Alive, not a zombie, and a databaseds: a recycled PID must never be killed."""
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        zombie = status.rsplit(")", 1)[-1].split()[0] == "Z"
        return not zombie and b"databaseds" in cmdline.lower()

    def _terminate(self, pid: int, grace: float = 5.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._wait_gone(pid, grace):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_gone(pid, grace):
            raise EmbeddedDatabaseError(f"the embedded database (pid {pid}) did not stop")

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(0.05)
                    return True
            elif not self._is_our_process(pid):
                return True
            else:
                time.sleep(0.05)
        return False


PORTS = range(20000, 32000)
"""Where a new database's port is picked: below Linux's ephemeral range (32768-60999), so
that no client's outgoing connection happens to sit on it when the database restarts."""


def _free_port_below_ephemeral(state_dir: Path) -> int:
    """A free port in PORTS, the same first choice for the same state directory."""
    first = zlib.crc32(str(state_dir.resolve()).encode()) % len(PORTS)
    for offset in range(len(PORTS)):
        port = PORTS[(first + offset * 7919) % len(PORTS)]
        if _port_is_free(port):
            return port
    raise EmbeddedDatabaseError(f"no free port on {HOST} in {PORTS.start}-{PORTS.stop - 1}")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as a server binds: a port left in TIME_WAIT by the last run is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _answers(port: int, timeout: float) -> bool:
    """True when a Tango database answers on HOST:port (a cheap TCP probe first)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            pass
    except OSError:
        return False
    import tango  # late: the state handling above needs no Tango

    try:
        tango.Database(HOST, port).get_info()
    except tango.DevFailed:
        return False
    return True
