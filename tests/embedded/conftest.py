"""The embedded stack as a newcomer runs it: `icat-servers` commands as real processes.

Each test gets a state directory of its own; whatever the test left running there
(what `up` recorded, the embedded database) is stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from icat_servers.adapters import stack
from icat_servers.adapters.embedded_db import EmbeddedDatabase

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE = REPO / "examples" / "id00.yml"
META = "id00/metaexp/test"
MANAGER = "id00/metadata/test"


def environment(state: Path, **extra: str) -> dict[str, str]:
    """This environment without TANGO_HOST, the console scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    env["ICAT_SERVERS_STATE"] = str(state)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def icat_servers(
    state: Path, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """`icat-servers ARGS` with no TANGO_HOST and ICAT_SERVERS_STATE=state."""
    return subprocess.run(
        [str(BIN / "icat-servers"), *args],
        env=environment(state),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def recorded(state: Path) -> dict[str, dict[str, int]]:
    """What `up` recorded: name -> {"pid", "started"}."""
    raw = json.loads((state / stack.UP_FILE).read_text())
    return {item["name"]: item for item in raw["started"]}


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def stop_everything(state: Path) -> None:
    """What up recorded, then the state dir's database: by PID, never by name."""
    if (state / stack.UP_FILE).exists():
        stack.down(state_dir=state)
    EmbeddedDatabase(state).stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    try:
        yield state
    finally:
        stop_everything(state)
