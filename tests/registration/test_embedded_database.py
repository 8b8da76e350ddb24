"""With no TANGO_HOST, `icat-servers` runs its own Tango database and keeps it between commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from icat_servers.adapters.embedded_db import EmbeddedDatabase, EmbeddedDatabaseError
from tests.registration.conftest import EXAMPLE
from tests.registration.test_plan import SECRET

SCRIPT = shutil.which("icat-servers", path=str(Path(sys.executable).parent))


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A private state dir; whatever database a test leaves running there is stopped by PID."""
    state = tmp_path / "state"
    yield state
    EmbeddedDatabase(state).stop()


def icat_servers(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    env["ICAT_SERVERS_STATE"] = str(state)
    command = [SCRIPT] if SCRIPT else [sys.executable, "-m", "icat_servers.adapters.cli"]
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def recorded(state: Path) -> dict[str, int]:
    data: dict[str, int] = json.loads((state / "database.json").read_text())
    return data


def test_register_without_tango_host_starts_and_keeps_the_embedded_database(
    state_dir: Path,
) -> None:
    first = icat_servers(state_dir, "register", str(EXAMPLE))

    assert first.returncode == 0, first.stderr
    assert "TANGO_HOST is not set: using the embedded Tango database" in first.stderr
    assert "+ device id00/metadata/test (MetadataManager/icatservers)" in first.stdout
    state = recorded(state_dir)
    assert alive(state["pid"])
    tango_host = f"127.0.0.1:{state['port']}"
    assert f"TANGO_HOST={tango_host}" in first.stderr

    db = tango.Database("127.0.0.1", state["port"])
    assert db.get_device_info("id00/metaexp/test").ds_full_name == "MetaExperiment/icatservers"
    # list(): pytango 9.5 answers a StdStringVector, which equals no list
    assert list(db.get_class_property("MetadataManager", ["API_KEY"])["API_KEY"]) == [SECRET]

    again = icat_servers(state_dir, "register", str(EXAMPLE))
    assert again.stdout.startswith("nothing to change")
    assert recorded(state_dir)["pid"] == state["pid"], "the running database was not reused"

    status = icat_servers(state_dir, "database", "status")
    assert status.returncode == 0
    assert f"running: TANGO_HOST={tango_host} pid {state['pid']}" in status.stdout

    for output in (first, again, status):
        assert SECRET not in output.stdout + output.stderr


def test_database_start_stop_status_and_the_port_is_remembered(state_dir: Path) -> None:
    started = icat_servers(state_dir, "database", "start")
    assert started.returncode == 0, started.stderr
    state = recorded(state_dir)
    assert started.stdout == f"TANGO_HOST=127.0.0.1:{state['port']}\n"
    assert icat_servers(state_dir, "register", str(EXAMPLE)).returncode == 0

    stopped = icat_servers(state_dir, "database", "stop")
    assert stopped.stdout == f"stopped the embedded Tango database (pid {state['pid']})\n"
    assert not alive(state["pid"])
    status = icat_servers(state_dir, "database", "status")
    assert status.returncode == 3
    assert status.stdout.startswith("not running")
    assert icat_servers(state_dir, "database", "stop").stdout.startswith(
        "the embedded Tango database was not running"
    )

    restarted = icat_servers(state_dir, "database", "start")
    assert restarted.stdout == started.stdout, "the remembered port was not reused"
    assert recorded(state_dir)["pid"] != state["pid"]
    kept = icat_servers(state_dir, "register", str(EXAMPLE))
    assert kept.stdout.startswith("nothing to change"), "the registration did not persist"


def test_a_stale_pid_file_is_not_trusted_and_a_busy_remembered_port_is_given_up(
    state_dir: Path, tango_db: str
) -> None:
    busy = int(tango_db.rsplit(":", 1)[1])  # another database answers there
    state_dir.mkdir()
    (state_dir / "database.json").write_text(json.dumps({"pid": os.getpid(), "port": busy}))
    database = EmbeddedDatabase(state_dir)

    assert database.status() is None
    assert database.stop() is None  # our own PID is no databaseds: never signalled
    tango_host = database.start()
    assert tango_host != tango_db
    assert recorded(state_dir)["pid"] not in (os.getpid(), None)
    assert database.status() is not None


def test_a_busy_port_is_refused_with_what_to_do(state_dir: Path, tango_db: str) -> None:
    busy = int(tango_db.rsplit(":", 1)[1])
    with pytest.raises(EmbeddedDatabaseError, match=f"port {busy} on 127.0.0.1 is in use"):
        EmbeddedDatabase(state_dir, port=busy).start()


def test_a_database_that_runs_but_does_not_answer_is_reported_not_duplicated(
    state_dir: Path,
) -> None:
    database = EmbeddedDatabase(state_dir)
    database.start()
    pid = recorded(state_dir)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(EmbeddedDatabaseError, match=f"pid {pid}. runs but does not answer"):
            EmbeddedDatabase(state_dir).start()
        assert recorded(state_dir)["pid"] == pid
    finally:
        os.kill(pid, signal.SIGCONT)
    assert database.stop() == pid
    assert not alive(pid)


def test_the_database_comes_back_on_its_port_while_a_client_holds_a_connection(
    state_dir: Path,
) -> None:
    database = EmbeddedDatabase(state_dir)
    tango_host = database.start()
    port = int(tango_host.rsplit(":", 1)[1])
    assert port < 32768, "a new database's port is chosen below the ephemeral range"
    client = tango.Database("127.0.0.1", port)
    client.get_info()  # a connection the stopped database leaves in FIN-WAIT-2

    database.stop()
    assert EmbeddedDatabase(state_dir).start() == tango_host
    assert "TANGO Database" in client.get_info()


def test_database_start_while_it_runs_says_so_and_prints_tango_host(state_dir: Path) -> None:
    first = icat_servers(state_dir, "database", "start")
    again = icat_servers(state_dir, "database", "start")

    assert again.returncode == 0
    assert again.stdout == first.stdout
    pid = recorded(state_dir)["pid"]
    assert again.stderr == (
        f"the embedded Tango database already runs (pid {pid}, state in {state_dir})\n"
    )


def test_a_dry_run_with_no_database_compares_with_an_empty_one_and_starts_nothing(
    state_dir: Path,
) -> None:
    shown = icat_servers(state_dir, "register", "--dry-run", str(EXAMPLE))

    assert shown.returncode == 0, shown.stderr
    assert "no embedded Tango database runs" in shown.stderr
    assert "comparing with an empty database" in shown.stderr
    assert "+ device id00/metadata/test (MetadataManager/icatservers)" in shown.stdout
    assert shown.stdout.endswith("not written to an empty Tango database\n")
    assert SECRET not in shown.stdout + shown.stderr
    assert not state_dir.exists(), "a dry run started or wrote something"


def test_a_dry_run_compares_with_the_running_embedded_database_and_writes_nothing(
    state_dir: Path,
) -> None:
    started = icat_servers(state_dir, "database", "start")
    tango_host = started.stdout.strip().removeprefix("TANGO_HOST=")
    before = sorted(p.name for p in state_dir.iterdir())

    shown = icat_servers(state_dir, "register", "--dry-run", str(EXAMPLE))

    assert shown.returncode == 0, shown.stderr
    assert f"comparing with the embedded Tango database, TANGO_HOST={tango_host}" in shown.stderr
    assert shown.stdout.endswith(f"not written to TANGO_HOST={tango_host}\n")
    db = tango.Database(*tango_host.split(":"))
    assert "MetadataManager/icatservers" not in list(db.get_server_list("*"))
    assert sorted(p.name for p in state_dir.iterdir()) == before
    written = icat_servers(state_dir, "register", str(EXAMPLE))
    assert written.returncode == 0
    again = icat_servers(state_dir, "register", "--dry-run", str(EXAMPLE))
    assert again.stdout.startswith("nothing to change")
