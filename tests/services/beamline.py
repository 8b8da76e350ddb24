"""A beamline of real processes: a MetaExperiment and a MetadataManager following it.

The one fixture stack of the real-process tests (devices, e2e, e2e_delivery, fault tests).
The fixtures in tests/conftest.py hand these out:

- `tango_db` (session): TANGO_HOST of a pytango-db database started once per session.
- `beamlines` (session): a `Beamlines` on that database. `beamlines.make(tag, ...)`
  registers the pair `<beamline_id>/metaexp/<tag>` + `<beamline_id>/metadata/<tag>` (servers
  `MetaExperiment/<tag>`, `MetadataManager/<tag>`) with their properties, starts both
  console scripts and waits until they are linked. Use it in a package- or
  session-scoped fixture and call `stop()` at its end; whatever is left is killed when
  the session ends.
- `beamline_factory` (per test): the same `make`; every beamline it made is killed at
  the end of the test.
- `activemq`, `activemq_factory`, `icat_ingester`, `icatplus_mock`: optional services;
  pass `queue_urls=[activemq.url]` and `icatplus=icatplus_mock` to `make`.

    line = beamline_factory("crash", queue_urls=[activemq.url], icatplus=icatplus_mock,
                            manager_properties={"outboxDirectory": [str(tmp_path)]})
    line.meta.write_attribute("proposal", "hg123")   # DeviceProxy of each device
    line.manager_server.kill()                       # kill -9 by PID (.pid, .running)
    line.manager_server.start()                      # same devices, properties, outbox
    line.meta_server.restart()                       # kill -9, then start; returns once
                                                     # its device answers a ping
    line.wait_linked()                               # the manager among the followers
    line.outbox()                                    # the manager's OutboxStore; close it
    mark = line.mark(); ...; line.datasets_since(mark)   # what was registered since

`start=False` leaves both servers down: start them yourself in the order a test needs
(`line.manager_server.start()` first), or `line.start(linked=False)` when the manager is
expected in FAULT. A tag names the devices and servers: use a new one per test (the state
directory, hence the outbox, is new for each `make` unless `state=` is given). Also here:
`wait_for(condition, timeout, what)` for what happens without a call, `fresh()`,
`open_session()`, `snapshot()` and `describe()` for session tests, `Dataset.parse`.

Properties: `make` sets beamlineID, metaExperimentDevice, dataFolderPattern and
parameters; `queue_urls` (None: no delivery property at all, everything stays in the
outbox) adds queueURLs, queueName, icatplus_server, API_KEY and jolokiaPort on both
devices; `meta_properties`, `manager_properties` and `class_properties` (per class name)
add or override any. Class properties reach every device of the class in the session
database: `beamline_factory` removes them after the test, `beamlines.make` at the end of
the session (or call `beamlines.remove_class_properties(line)`). `register=False` starts
devices registered otherwise (the e2e package registers examples/id00.yml with
`icat-servers register`).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tango

from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.icatcore.outbox import Channel, Kind, OutboxMessage
from tests.services.servers import Server
from tests.services.servers import register as register_devices

INGEST_QUEUE = "/queue/icatIngest"
PATTERN = "{dataRoot}/{proposal}/{beamlineID}/{sampleName}/{datasetName}"
TECHNIQUE = ("Sample_description", "InstrumentSlitPrimary_horizontal_gap")
NS = {"tns": "http://www.esrf.fr/icat"}
Properties = Mapping[str, Sequence[str]]


def wait_for(
    condition: Callable[[], object],
    timeout: float = 10.0,
    what: str = "",
    describe: Callable[[], object] | None = None,
) -> float:
    """Poll `condition` (a DevFailed counts as not yet); returns the seconds it took.

    For what happens without a call (a process starting, a link found); never for a state
    a call caused: that one must be there when the call returns (SPEC).
    """
    start = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - start
        except tango.DevFailed:
            pass
        if time.monotonic() - start > timeout:
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
    """Two running servers, proxies of their devices, and the manager's outbox."""

    tango_host: str
    beamline_id: str
    meta_name: str
    manager_name: str
    meta_server: Server
    manager_server: Server
    state: Path
    """ICAT_SERVERS_STATE of both servers; their logs are there too."""
    outbox_root: Path
    """Where the outboxes are: `state`, or the manager's `outboxDirectory`."""
    parameters: tuple[str, ...] = TECHNIQUE
    queue: str | None = None
    class_properties: dict[str, list[str]] = field(default_factory=dict)
    """Names of the class properties `make` put, per class: they reach every device of
    the class in the session database until removed (`Beamlines.remove_class_properties`)."""
    proxies: dict[str, tango.DeviceProxy] = field(default_factory=dict)

    # -- devices -----------------------------------------------------------------------

    @property
    def meta(self) -> tango.DeviceProxy:
        return self.proxy(self.meta_name)

    @property
    def manager(self) -> tango.DeviceProxy:
        return self.proxy(self.manager_name)

    def proxy(self, name: str) -> tango.DeviceProxy:
        """A DeviceProxy by full name (TANGO_HOST of this process does not matter)."""
        if name not in self.proxies:
            self.proxies[name] = tango.DeviceProxy(self.trl(name))
        return self.proxies[name]

    def trl(self, name: str) -> str:
        return f"tango://{self.tango_host}/{name}"

    # -- processes -----------------------------------------------------------------

    def start(self, linked: bool = True) -> None:
        """Start the MetaExperiment, then the MetadataManager; wait for the link."""
        self.meta_server.start()
        self.manager_server.start()
        if linked:
            self.wait_linked()

    def stop(self) -> None:
        """kill -9 both servers (by PID); a stopped beamline can be started again."""
        self.manager_server.kill()
        self.meta_server.kill()

    def ensure_running(self) -> None:
        """Both servers up and linked (a test may have killed one)."""
        for server in (self.meta_server, self.manager_server):
            if not server.running:
                server.process = None
                server.start()
        self.wait_linked()

    def linked(self) -> bool:
        return self.manager_name in (self.meta.read_attribute("followers").value or ())

    def wait_linked(self, timeout: float = 30.0) -> None:
        wait_for(self.linked, timeout, f"{self.manager_name} in the followers of {self.meta_name}")

    # -- sessions ----------------------------------------------------------------------

    def fresh(self) -> None:
        """No proposal: the MetadataManager OFF, no dataset, no parameters."""
        self.ensure_running()
        self.meta.write_attribute("proposal", "")
        assert self.manager.state() == tango.DevState.OFF, self.manager.status()

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
            *self.parameters,
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

    # -- what was registered -------------------------------------------------------------

    def outbox_path(self, device: str | None = None) -> Path:
        """A device's outbox directory (the manager's by default)."""
        return self.outbox_root / "outbox" / (device or self.manager_name).replace("/", "_")

    def outbox(self, device: str | None = None) -> OutboxStore:
        """The device's outbox store, opened beside its server; close it after use."""
        return OutboxStore(self.outbox_path(device))

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


class Beamlines:
    """Makes beamlines on one Tango database; `stop_all()` kills every server it started."""

    def __init__(self, tango_host: str, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tango_host = tango_host
        self.tmp_path_factory = tmp_path_factory
        self.made: list[Beamline] = []

    def make(
        self,
        tag: str,
        *,
        beamline_id: str = "id01",
        meta_name: str | None = None,
        manager_name: str | None = None,
        instance: str | None = None,
        parameters: Sequence[str] = TECHNIQUE,
        pattern: str = PATTERN,
        queue_urls: Sequence[str] | None = None,
        queue: str = INGEST_QUEUE,
        icatplus: Any = None,
        meta_properties: Properties | None = None,
        manager_properties: Properties | None = None,
        class_properties: Mapping[str, Properties] | None = None,
        options: Sequence[str] = (),
        state: Path | None = None,
        register: bool = True,
        start: bool = True,
    ) -> Beamline:
        """Register (unless `register=False`) and start (unless `start=False`) a pair.

        `icatplus` is an `IcatPlusMock` (its URL and API key become the properties).
        A beamline that fails to start is still killed at the end.
        """
        meta_name = meta_name or f"{beamline_id}/metaexp/{tag}"
        manager_name = manager_name or f"{beamline_id}/metadata/{tag}"
        instance = instance or tag
        state = state or self.tmp_path_factory.mktemp(f"{tag}_state")
        state.mkdir(parents=True, exist_ok=True)
        delivery: dict[str, Sequence[str]] = {}
        if queue_urls is not None:
            delivery = {
                "queueURLs": list(queue_urls),
                "queueName": [queue],
                "icatplus_server": [icatplus.base_url if icatplus else "http://127.0.0.1:9"],
                "API_KEY": [icatplus.api_key if icatplus else "unused-key"],
                "jolokiaPort": ["0"],
            }
        meta_all = {"beamlineID": [beamline_id], **delivery, **(meta_properties or {})}
        manager_all = {
            "beamlineID": [beamline_id],
            "metaExperimentDevice": [meta_name],
            "dataFolderPattern": [pattern],
            "parameters": list(parameters),
            **delivery,
            **(manager_properties or {}),
        }
        if register:
            classes = class_properties or {}
            register_devices(
                self.tango_host,
                f"MetaExperiment/{instance}",
                "MetaExperiment",
                {meta_name: meta_all},
                classes.get("MetaExperiment"),
            )
            register_devices(
                self.tango_host,
                f"MetadataManager/{instance}",
                "MetadataManager",
                {manager_name: manager_all},
                classes.get("MetadataManager"),
            )
        environment = {"ICAT_SERVERS_STATE": str(state), "PYTHONUNBUFFERED": "1"}
        servers = [
            Server(
                executable,
                instance,
                self.tango_host,
                state / log,
                [device],
                environment,
                options=options,
            )
            for executable, device, log in (
                ("MetaExperiment", meta_name, "meta.log"),
                ("MetadataManager", manager_name, "manager.log"),
            )
        ]
        outbox_directory = (manager_properties or {}).get("outboxDirectory")
        beamline = Beamline(
            self.tango_host,
            beamline_id,
            meta_name,
            manager_name,
            servers[0],
            servers[1],
            state,
            Path(outbox_directory[0]) if outbox_directory else state,
            tuple(parameters),
            queue if queue_urls is not None else None,
            {cls: list(properties) for cls, properties in (class_properties or {}).items()},
        )
        self.made.append(beamline)
        if start:
            beamline.start()
        return beamline

    def remove_class_properties(self, beamline: Beamline) -> None:
        """Take the class properties `beamline` was made with out of the database."""
        host, port = self.tango_host.rsplit(":", 1)
        database = tango.Database(host, int(port))
        for device_class, names in beamline.class_properties.items():
            database.delete_class_property(device_class, names)
        beamline.class_properties = {}

    def stop_all(self) -> None:
        for beamline in self.made:
            beamline.stop()
            self.remove_class_properties(beamline)
