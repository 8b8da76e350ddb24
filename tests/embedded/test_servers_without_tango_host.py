"""A server started with no TANGO_HOST uses the running embedded database, or says in one
line how to get one; --help says what the server is."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import tango

from tests.embedded.conftest import BIN, EXAMPLE, META, alive, environment, icat_servers


def run_server(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "MetaExperiment"), *args],
        env=environment(state, HOME=str(state.parent)),  # no ~/.tangorc either
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_with_no_tango_host_and_no_database_a_server_exits_with_one_line(
    state_dir: Path,
) -> None:
    refused = run_server(state_dir, "icatservers")

    assert refused.returncode == 1
    assert refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert len(lines) == 1, refused.stderr
    assert "TANGO_HOST is not set" in lines[0]
    assert "'icat-servers up'" in lines[0]
    assert "'icat-servers database start'" in lines[0]
    assert not state_dir.exists(), "the refusal started or wrote something"


@pytest.mark.slow
def test_with_no_tango_host_a_server_uses_the_running_embedded_database(
    state_dir: Path,
) -> None:
    registered = icat_servers(state_dir, "register", str(EXAMPLE))
    assert registered.returncode == 0, registered.stderr
    tango_host = icat_servers(state_dir, "database", "status").stdout.split()[1]
    tango_host = tango_host.removeprefix("TANGO_HOST=")
    log = state_dir / "meta.log"
    env = environment(state_dir, HOME=str(state_dir.parent))
    assert "TANGO_HOST" not in env
    with log.open("wb") as out:  # exactly this environment: not start_server's merge
        process = subprocess.Popen(
            [str(BIN / "MetaExperiment"), "icatservers"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        device = tango.DeviceProxy(f"tango://{tango_host}/{META}")
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                assert device.state() == tango.DevState.ON
                break
            except tango.DevFailed:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert (
            f"TANGO_HOST is not set: using the embedded Tango database of {state_dir}, "
            f"TANGO_HOST={tango_host}" in log.read_text()
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not alive(process.pid)


def test_help_says_what_the_server_is_and_where_to_read_more(tmp_path: Path) -> None:
    for server in ("MetaExperiment", "MetadataManager"):
        shown = subprocess.run(
            [str(BIN / server), "--help"],
            env=environment(tmp_path / "state"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert text.startswith(f"{server} INSTANCE: the {server} Tango device server")
        assert "queueURLs" in text and "beamlineID" in text
        assert f"ICAT_SERVERS_STATE (now {tmp_path / 'state'})" in text
        assert "'icat-servers up'" in text
        assert "README.md" in text
        assert "-nodb" in text, "Tango's own options are no longer listed"
    assert "metaExperimentDevice" in text  # the MetadataManager's required property


def test_python_m_adapters_cli_help_works() -> None:
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "icat_servers.adapters.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    for command in ("up", "down", "register", "database", "demo"):
        assert command in shown.stdout
