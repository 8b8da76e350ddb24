"""The example beamline, registered and run the way beamline staff do it.

`examples/id00.yml` is copied, its broker and ICAT+ addresses pointed at a loopback port
nobody can listen on (port 1 needs root), and loaded with the real `icat-servers register`
command into the session's Tango database. Both console scripts are then started as
processes with their own `ICAT_SERVERS_STATE`, so every dataset they register stays in
the MetadataManager's outbox, where the tests read it back.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango
import yaml

from tests.services.beamline import Beamline, Beamlines, Dataset, wait_for
from tests.services.servers import BIN

__all__ = ["BEAMLINE", "MANAGER", "META", "TECHNIQUE", "Beamline", "Dataset", "wait_for"]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "id00.yml"
INSTANCE = "icatservers"
META = "id00/metaexp/test"
MANAGER = "id00/metadata/test"
BEAMLINE = "id00"
NOWHERE_BROKER = "127.0.0.1:1"
NOWHERE_ICATPLUS = "http://127.0.0.1:1"
TECHNIQUE = (
    "Sample_description",
    "Sample_notes",
    "InstrumentSlitPrimary_horizontal_gap",
    "InstrumentSlitPrimary_vertical_gap",
    "InstrumentMonochromator_energy",
)

OFF, STANDBY, ON, RUNNING = (
    tango.DevState.OFF,
    tango.DevState.STANDBY,
    tango.DevState.ON,
    tango.DevState.RUNNING,
)


def example_for_tests(directory: Path) -> Path:
    """examples/id00.yml, with nothing it sends able to leave this machine or this test."""
    entries = yaml.safe_load(EXAMPLE.read_text())
    for entry in entries:
        properties = entry.get("properties")
        if entry.get("class") in ("MetaExperiment", "MetadataManager") and properties:
            properties["queueURLs"] = [NOWHERE_BROKER]
            if "icatplus_server" in properties:
                properties["icatplus_server"] = NOWHERE_ICATPLUS
    copy = directory / "id00.yml"
    copy.write_text(yaml.safe_dump(entries, sort_keys=False))
    return copy


def icat_servers(*args: str | Path, tango_host: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TANGO_HOST": tango_host}
    return subprocess.run(
        [str(BIN / "icat-servers"), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def registered(tango_db: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example registered with `icat-servers register`, twice: the second changes nothing."""
    copy = example_for_tests(tmp_path_factory.mktemp("e2e_config"))
    first = icat_servers("register", copy, tango_host=tango_db)
    assert first.returncode == 0, first.stdout + first.stderr
    again = icat_servers("register", copy, tango_host=tango_db)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("nothing to change"), again.stdout
    return copy


@pytest.fixture(scope="package")
def e2e_beamline(beamlines: Beamlines, registered: Path) -> Iterator[Beamline]:
    """The example's two servers (instance `icatservers`), as registered from the YAML."""
    line = beamlines.make(
        INSTANCE,
        beamline_id=BEAMLINE,
        meta_name=META,
        manager_name=MANAGER,
        parameters=TECHNIQUE,
        register=False,
    )
    try:
        yield line
    finally:
        line.stop()


@pytest.fixture
def beamline(e2e_beamline: Beamline) -> Beamline:
    """Both servers up and linked, no proposal: each test starts a session of its own."""
    e2e_beamline.fresh()
    return e2e_beamline
