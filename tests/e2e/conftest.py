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
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tango
import yaml

from adapters.outbox_store import OutboxStore
from icatcore.outbox import Channel, Kind, OutboxMessage
from tests.services.servers import BIN, Server

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
NS = {"tns": "http://www.esrf.fr/icat"}

OFF, STANDBY, ON, RUNNING = (
    tango.DevState.OFF,
    tango.DevState.STANDBY,
    tango.DevState.ON,
    tango.DevState.RUNNING,
)


def wait_for(
    condition: Callable[[], object],
    timeout: float = 10.0,
    what: str = "",
    describe: Callable[[], object] | None = None,
) -> None:
    """For what happens without a call (a process starting, a link found); never for a
    state a call caused: that one must be there when the call returns (SPEC)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except tango.DevFailed:
            pass
        if time.monotonic() > deadline:
            found = f"; found {describe()}" if describe is not None else ""
            raise AssertionError(f"not reached in {timeout} s: {what or condition}{found}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Dataset:
    """One registered dataset, read back from the XML the device stored."""

    complete: str
    proposal: str
    beamline: str
    name: str
    location: str
    sample: str
    start: str
    end: str
    files: tuple[str, ...]
    parameters: dict[str, str]

    @classmethod
    def parse(cls, body: bytes) -> Dataset:
        root = ET.fromstring(body)
        assert root.tag == "{http://www.esrf.fr/icat}dataset", root.tag

        def text(path: str) -> str:
            found = root.find(path, NS)
            assert found is not None, f"{path} missing in {body!r}"
            return found.text or ""

        return cls(
            complete=root.get("complete", ""),
            proposal=text("tns:investigation"),
            beamline=text("tns:instrument"),
            name=text("tns:name"),
            location=text("tns:location"),
            sample=text("tns:sample/tns:name"),
            start=text("tns:startDate"),
            end=text("tns:endDate"),
            files=tuple(
                (node.text or "") for node in root.findall("tns:datafile/tns:location", NS)
            ),
            parameters={
                node.findtext("tns:name", "", NS): node.findtext("tns:value", "", NS)
                for node in root.findall("tns:parameter", NS)
            },
        )


@dataclass
class Beamline:
    """The two running servers, their proxies and the manager's outbox."""

    tango_host: str
    state: Path
    meta_server: Server
    manager_server: Server
    proxies: dict[str, tango.DeviceProxy] = field(default_factory=dict)

    @property
    def meta(self) -> tango.DeviceProxy:
        return self.proxy(META)

    @property
    def manager(self) -> tango.DeviceProxy:
        return self.proxy(MANAGER)

    def proxy(self, name: str) -> tango.DeviceProxy:
        if name not in self.proxies:
            self.proxies[name] = tango.DeviceProxy(self.trl(name))
        return self.proxies[name]

    def trl(self, name: str) -> str:
        return f"tango://{self.tango_host}/{name}"

    def outbox_path(self, device: str = MANAGER) -> Path:
        return self.state / "outbox" / device.replace("/", "_")

    def outbox(self, device: str = MANAGER) -> OutboxStore:
        return OutboxStore(self.outbox_path(device))

    # -- what was registered ------------------------------------------------------

    def mark(self) -> int:
        """The position of the newest message in the outbox: read what comes after it."""
        store = self.outbox()
        try:
            return max(
                (
                    seq
                    for channel in Channel
                    for seq, _ in store.pending_after(channel, 0, limit=1_000_000)
                ),
                default=0,
            )
        finally:
            store.close()

    def messages_since(self, mark: int, channel: Channel = Channel.ICAT) -> list[OutboxMessage]:
        store = self.outbox()
        try:
            return [m for _, m in store.pending_after(channel, mark, limit=1_000_000)]
        finally:
            store.close()

    def datasets_since(self, mark: int) -> list[Dataset]:
        return [Dataset.parse(m.body) for m in self.messages_since(mark) if m.kind is Kind.DATASET]

    # -- processes ----------------------------------------------------------------

    def linked(self) -> bool:
        return MANAGER in (self.meta.read_attribute("followers").value or ())

    def wait_linked(self, timeout: float = 15.0) -> None:
        wait_for(self.linked, timeout, f"{MANAGER} in the followers of {META}")

    def ensure_running(self) -> None:
        """Both servers up and linked (a test may have killed one)."""
        for server in (self.meta_server, self.manager_server):
            if server.process is None or server.process.poll() is not None:
                server.process = None
                server.start()
        self.wait_linked()

    def fresh(self) -> None:
        """No proposal: the MetadataManager OFF, no dataset, no parameters."""
        self.ensure_running()
        self.meta.write_attribute("proposal", "")
        assert self.manager.state() == OFF, self.manager.status()

    def open_session(
        self, proposal: str = "hg123", sample: str = "lysozyme", root: str = "/data/visitor/hg123"
    ) -> None:
        self.meta.write_attribute("proposal", proposal)
        self.meta.write_attribute("sample", sample)
        self.meta.write_attribute("dataRoot", root)

    def describe(self) -> str:
        """The manager as a person would look at it, for failure messages."""
        try:
            name = self.manager.read_attributes(["datasetName"])[0].value
            return f"{self.manager.state()} {name!r}: {self.manager.status()}"
        except tango.DevFailed as error:
            return f"unreachable ({error.args[0].desc.strip()})"

    def snapshot(self) -> dict[str, Any]:
        """Everything a client can read that a refused call must leave unchanged."""
        manager_attributes = [
            "proposal",
            "sampleName",
            "datasetName",
            "dataFolder",
            "lastDataFile",
            "datafileList",
            *TECHNIQUE,
        ]
        values: dict[str, Any] = {
            f"manager.{a.name}": _plain(a.value)
            for a in self.manager.read_attributes(manager_attributes)
        }
        values.update(
            {
                f"meta.{a.name}": a.value
                for a in self.meta.read_attributes(["proposal", "sample", "dataRoot"])
            }
        )
        values["manager.State"] = self.manager.state()
        values["meta.State"] = self.meta.state()
        values["registered"] = self.outbox_count()
        return values

    def outbox_count(self) -> int:
        store = self.outbox()
        try:
            return store.count(Channel.ICAT, Kind.DATASET)
        finally:
            store.close()


def _plain(value: Any) -> Any:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


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
def e2e_beamline(
    tango_db: str, registered: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Beamline]:
    state = tmp_path_factory.mktemp("e2e_state")
    logs = tmp_path_factory.mktemp("e2e_logs")
    environment = {"ICAT_SERVERS_STATE": str(state)}
    previous = os.environ.get("TANGO_HOST")
    os.environ["TANGO_HOST"] = tango_db  # Server.start asks the database for the devices
    meta = Server("MetaExperiment", INSTANCE, tango_db, logs / "meta.log", [META], environment)
    manager = Server(
        "MetadataManager", INSTANCE, tango_db, logs / "manager.log", [MANAGER], environment
    )
    beamline = Beamline(tango_db, state, meta, manager)
    try:
        meta.start()
        manager.start()
        beamline.wait_linked()
        yield beamline
    finally:
        manager.kill()
        meta.kill()
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous


@pytest.fixture
def beamline(e2e_beamline: Beamline) -> Beamline:
    """Both servers up and linked, no proposal: each test starts a session of its own."""
    e2e_beamline.fresh()
    return e2e_beamline
