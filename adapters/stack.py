"""`icat-servers up` and `down`: the embedded stack a newcomer can try the servers on.

`up` starts (or reuses) the embedded Tango database of a state directory, registers
the YAML files in it, optionally starts a local ActiveMQ, and starts every server the
files name. Each process it starts is recorded in `up.json` of the state directory
(PID and start time); `down` stops exactly those, and nothing else. Both can be run
any number of times.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from icat_servers.adapters import registration
from icat_servers.adapters.activemq import ActiveMQ, port_accepts
from icat_servers.adapters.embedded_db import EmbeddedDatabase, RunningDatabase
from icat_servers.adapters.processes import Recorded, start_server

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "id00.yml"
"""The shipped example, the default registration: examples/ of a checkout (through the
icat_servers/examples link), icat_servers/examples/ of an installed wheel."""

UP_FILE = "up.json"
UP_LOCK = "up.lock"
DATABASE = "database"
BROKER = "activemq"
DEFAULT_BROKER_PORT = 61613
SERVER_ORDER = ("MetaExperiment", "MetadataManager")
"""The order does not matter to the servers; MetaExperiment first makes quieter logs."""


class UpError(RuntimeError):
    """`up` could not bring the stack up; what it started so far stays recorded."""


@dataclass
class UpRecord:
    """What `up` started in one state directory, by name ("database", "activemq",
    "MetaExperiment/icatservers", ...)."""

    state_dir: Path
    started: dict[str, Recorded] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.state_dir / UP_FILE

    @classmethod
    def read(cls, state_dir: Path) -> UpRecord:
        record = cls(state_dir)
        try:
            raw = json.loads(record.path.read_text())
        except (FileNotFoundError, ValueError):
            return record
        for item in raw.get("started", []) if isinstance(raw, dict) else []:
            found = Recorded.from_json(item)
            if found is not None:
                record.started[found.name] = found
        return record

    def write(self) -> None:
        if not self.started:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        items = [r.to_json() for r in self.started.values()]
        tmp.write_text(json.dumps({"started": items}, indent=1) + "\n")
        tmp.replace(self.path)

    def add(self, name: str, pid: int) -> None:
        self.started[name] = Recorded.of(name, pid)
        self.write()

    def running(self, name: str) -> Recorded | None:
        found = self.started.get(name)
        return found if found is not None and found.alive() else None


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per state directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / UP_LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def executable(name: str) -> str:
    """A console script of this installation (beside the running Python), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UpError(f"{name} is not installed: run scripts/setup, or pip install the project")
    return found


def broker_port(wanted: registration.Registration) -> int:
    """The loopback port the registration's queueURLs names (the first), else 61613."""
    candidates: list[tuple[str, ...]] = [
        props["queueURLs"] for props in wanted.class_properties.values() if props.get("queueURLs")
    ]
    candidates += [d.properties["queueURLs"] for d in wanted.devices if "queueURLs" in d.properties]
    for urls in candidates:
        for url in urls:
            host, _, port = url.strip().rpartition(":")
            if host in ("localhost", "127.0.0.1") and port.isdigit():
                return int(port)
    return DEFAULT_BROKER_PORT


def servers(wanted: registration.Registration) -> list[tuple[str, list[str]]]:
    """Each server ("Class/instance") the registration names, with its devices."""
    found: dict[str, list[str]] = {}
    for device in wanted.devices:
        found.setdefault(device.server, []).append(device.name)
    order = {name: n for n, name in enumerate(SERVER_ORDER)}
    return sorted(found.items(), key=lambda item: (order.get(item[0].split("/")[0], 9), item[0]))


def _answers(tango_host: str, devices: Sequence[str]) -> bool:
    """Every device answers a ping: some process already serves them."""
    import tango

    try:
        for device in devices:
            tango.DeviceProxy(f"tango://{tango_host}/{device}").ping()
    except tango.DevFailed:
        return False
    return True


def up(
    files: Sequence[Path],
    *,
    state_dir: Path,
    broker: bool,
    say: TextIO = sys.stderr,
) -> RunningDatabase:
    """Bring the stack up (reusing whatever already runs) and return its database."""
    import tango

    wanted = registration.plan(files)
    with _locked(state_dir):
        record = UpRecord.read(state_dir)
        database = EmbeddedDatabase(state_dir)
        running, started = database.start_or_reuse()
        tango_host = running.tango_host
        if started:
            record.add(DATABASE, running.pid)
            print(f"started the embedded Tango database: TANGO_HOST={tango_host}", file=say)
        else:
            print(f"the embedded Tango database runs: TANGO_HOST={tango_host}", file=say)

        db = tango.Database(*running.tango_host.split(":"))
        todo = registration.changes(wanted, db)
        registration.apply(todo, db)
        names = ", ".join(str(f) for f in files)
        print(f"registered {names}: {len(todo)} change(s)", file=say)

        port = broker_port(wanted)
        if broker:
            _broker_up(record, state_dir, port, say)
        elif not port_accepts(port):
            print(
                f"no broker on localhost:{port}: datasets wait in the outboxes until one "
                "listens (icat-servers up --broker starts a local ActiveMQ)",
                file=say,
            )

        environment = {"TANGO_HOST": tango_host, "ICAT_SERVERS_STATE": str(state_dir)}
        for server, devices in servers(wanted):
            mine = record.running(server)
            if mine is not None:
                print(f"{server} runs (pid {mine.pid}): {', '.join(devices)}", file=say)
                continue
            if _answers(tango_host, devices):
                print(
                    f"{server}: its devices are served by a process up did not start; left alone",
                    file=say,
                )
                continue
            class_name, instance = server.split("/", 1)
            log = state_dir / f"{class_name}-{instance}.log"
            try:
                process = start_server(
                    [executable(class_name), instance], devices, log, environment
                )
            except RuntimeError as exc:
                raise UpError(str(exc)) from None
            record.add(server, process.pid)
            print(
                f"started {server} (pid {process.pid}): {', '.join(devices)}; log {log}", file=say
            )
        return running


def _broker_up(record: UpRecord, state_dir: Path, port: int, say: TextIO) -> None:
    mine = record.running(BROKER)
    if mine is not None:
        print(f"ActiveMQ runs (pid {mine.pid}) on localhost:{port}", file=say)
    elif port_accepts(port):
        print(f"a broker up did not start listens on localhost:{port}: using it", file=say)
    else:
        activemq = ActiveMQ(state_dir / "activemq", port)
        try:
            activemq.start(detach=True)
        except RuntimeError as exc:
            raise UpError(f"ActiveMQ did not start: {exc}") from None
        assert activemq.process is not None
        record.add(BROKER, activemq.process.pid)
        print(
            f"started ActiveMQ (pid {activemq.process.pid}) on localhost:{port}; "
            f"log {activemq.log_path}",
            file=say,
        )


def down(*, state_dir: Path, say: TextIO = sys.stdout) -> int:
    """Stop what `up` started in `state_dir`, servers first; return how many processes."""
    if not (state_dir / UP_FILE).exists():
        print(f"nothing to stop: icat-servers up started nothing in {state_dir}", file=say)
        return 0
    stopped = 0
    with _locked(state_dir):
        record = UpRecord.read(state_dir)
        names = [n for n in record.started if n not in (BROKER, DATABASE)]
        for name in [*names, BROKER, DATABASE]:
            process = record.started.pop(name, None)
            if process is None:
                continue
            if name == DATABASE:
                stopped += _database_down(state_dir, process, say)
            elif process.stop():
                stopped += 1
                print(f"stopped {name} (pid {process.pid})", file=say)
            else:
                print(f"{name} (pid {process.pid}) was no longer running", file=say)
            record.write()
    return stopped


def _database_down(state_dir: Path, process: Recorded, say: TextIO) -> int:
    database = EmbeddedDatabase(state_dir)
    running = database.status()
    if not process.alive():
        if running is not None:
            print(
                f"the embedded Tango database now runs as pid {running.pid}, not the one up "
                f"started: left running (icat-servers database stop stops it)",
                file=say,
            )
        else:
            print("the embedded Tango database was no longer running", file=say)
        return 0
    database.stop()
    print(f"stopped the embedded Tango database (pid {process.pid})", file=say)
    return 1
