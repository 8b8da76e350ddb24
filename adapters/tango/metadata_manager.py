"""The MetadataManager Tango device: one technique's datasets, registered with ICAT.

Each Tango call is translated into one chart event; the chart decides; the effects it
returns are stored durably before the call returns; the device shows the chart's state.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import tango
from tango import AttrWriteType, DevState, EventType
from tango.server import Device, attribute, command, run

from icat_servers.adapters.delivery import CLOSED, Delivery, DeliveryHealth, reopened
from icat_servers.adapters.outbox_store import OutboxUnavailable
from icat_servers.adapters.tango import common, properties
from icat_servers.adapters.tango.health import HealthAttributes
from icat_servers.adapters.tango.housekeeping import Housekeeper
from icat_servers.adapters.tango.link import Leader
from icat_servers.adapters.tango.outbox_commands import OutboxCommands
from icat_servers.adapters.tango.watcher import Watcher
from icat_servers.icatcore import config, elogbook, messages
from icat_servers.icatcore.definitions import parse_parameters
from icat_servers.icatcore.outbox import Kind, icat_message
from icat_servers.statecharts.effects import (
    Effect,
    KeepDatasetName,
    KeepFile,
    KeepParentLocation,
    KeepRunningDataset,
    RegisterDataset,
)
from icat_servers.statecharts.metadata_manager import MetadataManagerChart, Settings

STATES = {
    "off": DevState.OFF,
    "standby": DevState.STANDBY,
    "on": DevState.ON,
    "running": DevState.RUNNING,
    "fault": DevState.FAULT,
}
FOLLOWED = ("proposal", "sampleName", "datasetName", "scanName", "dataFolder")
KEPT_COPIES = 1000
PRUNE_EVERY = 100
MESSAGES_KEPT = 100
RUNNING = "running dataset"
NAME = "datasetName"
PARENT = "dataset parent location"
"""The outbox journal's entries: the dataset in progress, the memorized name (with the
experiment it was named under) and the dataset parent location."""


class MetadataManager(  # type: ignore[misc]
    OutboxCommands, HealthAttributes, common.Citizen, properties.declared("MetadataManager"), Device
):
    """Holds the dataset; registers it with ICAT when it ends, and never loses it.

    `Init` keeps the chart: it re-reads the properties and hands them to the chart, so
    the running dataset, datasetName and the link stay as they were. A new process takes
    back what the outbox's journal kept, then asks its MetaExperiment before it accepts
    calls.
    """

    chart: MetadataManagerChart
    health_thread = False
    """The device's Watcher pushes the health events every second (adapters/tango/watcher.py)."""

    def init_device(self) -> None:
        super().init_device()
        if not hasattr(self, "chart"):
            self.start_up()
        else:
            self.reconfigure()

    def start_up(self) -> None:
        self.outlet: Delivery | None = None
        self.leader: Leader | None = None
        self.watcher = Watcher(self, self.refresh)
        self.delivery_seen: tuple[int, str] | tuple[()] = ()
        self.parameter_names: tuple[str, ...] = ()
        self.metadata_file = ""
        self.copies_written = 0
        self.shown: tuple[object, ...] = ()
        self.messages: deque[str] = deque(maxlen=MESSAGES_KEPT)
        self.housekeeper = Housekeeper(f"{self.get_name()} housekeeping")
        self.delivery_line = ""
        self.notes: tuple[str, ...] = ()
        """Status lines on the configuration: unused properties, where secrets come from."""
        self.chart = MetadataManagerChart(Settings(beamline="", meta_experiment="?"))
        for name in ("State", "Status", *FOLLOWED):
            self.set_change_event(name, True, False)
        settings, problem = self.configure()
        self.recall()
        self.chart.handle("configure", settings=settings, problem=problem)
        if self.leader is not None:
            self.leader.ask_now()
        self.publish()
        self.follow()

    def recall(self) -> None:
        """What the journal kept: datasetName (for its experiment), the parent location
        and the running dataset with its files."""
        if self.outlet is None:
            return
        kept = self.outlet.recall(NAME) or ""
        try:
            name = json.loads(kept or "{}")
        except ValueError:  # kept by an earlier version, without its experiment
            name = {"name": kept}
        self.chart.handle(
            "restore",
            dataset_name=name.get("name", ""),
            proposal=name.get("proposal", ""),
            sample=name.get("sample", ""),
            parent=self.outlet.recall(PARENT) or "",
        )
        running = self.outlet.recall(RUNNING)
        if running is not None:
            files = self.outlet.recall_items(RUNNING)
            self.chart.handle("resume_dataset", journal=running, files=files)

    def server_init_hook(self) -> None:
        """Once exported, ask again: a change published while this device was starting
        could not reach it."""
        if self.leader is not None:
            with tango.AutoTangoMonitor(self):
                self.leader.ask_now()

    def reconfigure(self) -> None:
        """Init: read every property again; what runs keeps running."""
        with common.client_errors("MetadataManager.Init"):
            leader = self.leader
            settings, problem = self.configure()
            self.run(self.chart.handle("configure", settings=settings, problem=problem))
            if self.leader is not None and self.leader is not leader:
                self.leader.ask_now()
            self.publish()
            self.follow()

    def follow(self) -> None:
        if self.leader is not None:
            self.leader.start()
        if self.outlet is not None:
            self.watcher.start()

    def configure(self) -> tuple[Settings | None, str]:
        """Read the properties and open what they name; the problem, if any, in words."""
        settings, problem, self.notes = common.read_configuration(self, config.metadata_manager)
        if settings is None:
            return None, problem
        self.settings = settings
        self.add_parameter_attributes(settings.parameters)
        directory = common.state_directory(settings.outbox_directory, self.get_name())
        self.copies = directory / "metadata"
        chart_settings = Settings(
            settings.beamline, settings.meta_experiment, settings.data_folder_pattern
        )
        try:
            self.outlet = reopened(self.outlet, directory, settings.delivery)
        except OutboxUnavailable as error:
            self.outlet = None
            return chart_settings, str(error)
        self.delivery_line = self.health().status_line(time.time())
        if self.leader is None or self.leader.leader != settings.meta_experiment:
            if self.leader is not None:
                self.leader.stop()
            self.leader = Leader(self.get_name(), settings.meta_experiment, self.found, self.lost)
        return chart_settings, ""

    def delete_device(self) -> None:
        """Init keeps everything; only a server that shuts down lets go."""
        if not tango.Util.instance().is_svr_shutting_down():
            return
        self.watcher.stop()
        self.housekeeper.stop()
        if self.leader is not None:
            self.leader.stop()
        if self.outlet is not None:
            self.outlet.close()
        super().delete_device()

    # -- the MetaExperiment ---------------------------------------------------------

    # Tango calls hold the device monitor; found, lost and refresh run in threads of
    # their own and take the same monitor, so one lock orders everything (a second lock
    # deadlocked with push_change_event: tests/e2e_delivery).

    def found(self, answer: str) -> None:
        with tango.AutoTangoMonitor(self):
            self.take_experiment(answer)

    def lost(self, why: str, heard: int) -> None:
        """Unless an answer came since the failed call began: that one is newer."""
        with tango.AutoTangoMonitor(self):
            if self.leader is not None and self.leader.heard == heard:
                self.event("experiment_lost", why=why)

    @command(dtype_in=str)
    def ExperimentChanged(self, text: str) -> None:
        """Called by the MetaExperiment before its write returns."""
        self.take_experiment(text)

    def take_experiment(self, text: str) -> None:
        """Under the device monitor, so an older answer never overwrites a newer one."""
        experiment = self.leader.take(text) if self.leader is not None else None
        if experiment is not None:
            self.event("experiment_changed", experiment=experiment, at=common.now())

    # -- attributes -----------------------------------------------------------------

    @attribute(dtype=str)
    def proposal(self) -> str:
        return self.chart.experiment.proposal

    @attribute(dtype=str)
    def sampleName(self) -> str:
        return self.chart.experiment.sample

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE)
    def datasetName(self) -> str:
        return self.readable_dataset_name("datasetName")

    @datasetName.write
    def datasetName(self, name: Any) -> None:
        self.name_dataset(name, "datasetName")

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE)
    def scanName(self) -> str:
        return self.readable_dataset_name("scanName")

    @scanName.write
    def scanName(self, name: Any) -> None:
        self.name_dataset(name, "scanName")

    def readable_dataset_name(self, attribute: str) -> str:
        with common.client_errors(f"MetadataManager.{attribute}", refused="API_AttrNotAllowed"):
            return self.chart.read_dataset_name()

    def name_dataset(self, name: Any, attribute: str) -> None:
        self.event("name_dataset", name=common.text_argument(name, attribute))

    @attribute(dtype=str)
    def dataFolder(self) -> str:
        return self.chart.data_folder()

    @attribute(dtype=str)
    def metadataFile(self) -> str:
        return self.metadata_file

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE)
    def lastDataFile(self) -> str:
        return self.chart.last_file

    @lastDataFile.write
    def lastDataFile(self, path: Any) -> None:
        self.event("add_file", path=common.text_argument(path, "lastDataFile"))

    @attribute(dtype=(str,), max_dim_x=MESSAGES_KEPT)
    def messageList(self) -> list[str]:
        """The device's recent messages, newest last (tango-metadata's attribute)."""
        return list(self.messages)

    @attribute(dtype=(str,), max_dim_x=100000)
    def datafileList(self) -> list[str]:
        return list(self.chart.files)

    def add_parameter_attributes(self, names: tuple[str, ...]) -> None:
        for name in names:
            if name in self.parameter_names:
                continue
            self.add_attribute(
                attribute(
                    name=name,
                    dtype=str,
                    access=AttrWriteType.READ_WRITE,
                    fget=self.read_parameter,
                    fset=self.write_parameter,
                )
            )
        self.parameter_names = tuple(dict.fromkeys((*self.parameter_names, *names)))

    def read_parameter(self, attr: tango.Attribute) -> str:
        return str(self.chart.parameters.get(attr.get_name(), ""))

    def write_parameter(self, attr: tango.WAttribute) -> None:
        value = common.text_argument(attr.get_write_value(), attr.get_name())
        self.event("set_parameters", values={attr.get_name(): value})

    # -- commands -------------------------------------------------------------------

    @command
    def StartDataset(self) -> None:
        self.event("start_dataset", at=common.now())

    @command
    def EndDataset(self) -> None:
        self.event("end_dataset", at=common.now())

    @command
    def AbortDataset(self) -> None:
        self.event("abort_dataset", at=common.now())

    @command
    def StartScan(self) -> None:
        self.StartDataset()

    @command
    def EndScan(self) -> None:
        self.EndDataset()

    @command
    def AbortScan(self) -> None:
        self.AbortDataset()

    @command(dtype_in=str)
    def setDatasetParentLocation(self, parent: Any) -> None:
        """The next datasets go to PARENT/datasetName instead of dataFolderPattern."""
        self.event(
            "set_parent_location",
            parent=common.text_argument(parent, "dataset parent location"),
        )

    @command(dtype_out=str)
    def getDatasetParentLocation(self) -> str:
        return self.chart.parent_location

    @command
    def clearDatasetParentLocation(self) -> None:
        self.event("clear_parent_location")

    @command(dtype_in=str)
    def SetParameters(self, text: Any) -> None:
        with common.client_errors("MetadataManager.SetParameters"):
            values = parse_parameters(common.text_argument(text, "SetParameters"))
        self.event("set_parameters", values=values)

    @command(dtype_in=str)
    def notifyInfo(self, text: Any) -> None:
        self.logbook(elogbook.Category.INFO, text)

    @command(dtype_in=str)
    def notifyDebug(self, text: Any) -> None:
        self.logbook(elogbook.Category.DEBUG, text)

    @command(dtype_in=str)
    def notifyError(self, text: Any) -> None:
        self.logbook(elogbook.Category.ERROR, text)

    @command(dtype_in=str)
    def notifyCommand(self, text: Any) -> None:
        self.logbook(elogbook.Category.COMMAND, text)

    @command(dtype_in=str)
    def userComment(self, text: Any) -> None:
        self.logbook(elogbook.Category.COMMENT, text)

    @command(dtype_in=str)
    def uploadBase64(self, data_url: Any) -> None:
        with common.client_errors("MetadataManager.uploadBase64"):
            self.store(
                elogbook.image_message(
                    id=common.new_id(),
                    created=common.epoch(),
                    data_url=common.text_argument(data_url, "uploadBase64"),
                    **self.logbook_address(),
                )
            )

    @command
    def Reset(self) -> None:
        """Re-read the configuration, reopen the outbox, and let the chart recompute."""
        with common.client_errors("MetadataManager.Reset"):
            settings, problem = self.configure()
            self.run(self.chart.handle("reset", problem=problem, settings=settings))
            self.publish()
            self.follow()

    # -- the shell: event in, effects out, state shown ------------------------------

    def event(self, event: str, /, **arguments: object) -> None:
        with common.client_errors(f"MetadataManager.{event}"):
            try:
                self.run(self.chart.handle(event, **arguments))
            finally:
                self.publish()

    def run(self, effects: list[Effect]) -> None:
        """Write what the chart asked for: the journal effects before a registration go
        in its transaction, the others in one note at the end."""
        journal: dict[str, str | None] = {}
        files: list[str] = []
        for effect in effects:
            if isinstance(effect, RegisterDataset):
                self.register(effect, {**journal, RUNNING: None})
                journal, files = {}, []
            elif isinstance(effect, KeepDatasetName):
                journal[NAME] = json.dumps(
                    {"name": effect.name, "proposal": effect.proposal, "sample": effect.sample}
                )
            elif isinstance(effect, KeepRunningDataset):
                if effect.files is not None:
                    self.note({RUNNING: None}, [])
                    files = list(effect.files)
                journal[RUNNING] = effect.journal
            elif isinstance(effect, KeepFile):
                files.append(effect.path)
            elif isinstance(effect, KeepParentLocation):
                journal[PARENT] = effect.parent or None
        if journal or files:
            self.note(journal, files)

    def note(self, journal: Mapping[str, str | None], files: list[str]) -> None:
        """Keep work in progress for a restart; if the outbox cannot, FAULT until Reset."""
        if self.outlet is None:
            return
        try:
            self.outlet.note(journal, {RUNNING: files})
        except OutboxUnavailable as error:
            self.storage_problem = f"the outbox cannot keep the running dataset: {error}"
            self.chart.handle("storage_failed", problem=self.storage_problem)
            common.fail("ICAT_Outbox", f"{self.storage_problem}. Then call Reset.", "keep")

    def register(self, effect: RegisterDataset, journal: Mapping[str, str | None]) -> None:
        xml = messages.dataset_xml(effect.dataset, machine=common.MACHINE, software=common.SOFTWARE)
        message = icat_message(
            id=common.new_id(),
            created=common.epoch(),
            kind=Kind.DATASET,
            queue=self.settings.delivery.queue,
            xml=xml,
        )
        try:
            self.store(message, journal=journal)
        except tango.DevFailed:
            self.chart.handle(
                "storage_failed", problem=self.storage_problem, dataset=effect.dataset
            )
            raise
        self.remember_message(
            f"dataset {effect.dataset.name!r} stored for ICAT (message {message.id})"
        )
        self.note_stored(f"dataset {effect.dataset.name!r}", message.id)
        self.keep_copy(message.id, xml)

    def remember_message(self, text: str) -> None:
        self.messages.append(f"{common.now().isoformat(timespec='seconds')} {text}")

    def keep_copy(self, message_id: str, xml: bytes) -> None:
        """The dataset's XML as a file too, for people who look; the outbox is what counts."""

        def write() -> None:
            path = self.copies / f"{message_id}.xml"
            try:
                self.copies.mkdir(exist_ok=True)
                path.write_bytes(xml)
                self.metadata_file = str(path)
                self.copies_written += 1
                if self.copies_written % PRUNE_EVERY == 0:
                    kept = sorted(self.copies.glob("*.xml"), key=lambda p: p.stat().st_mtime)
                    for old in kept[:-KEPT_COPIES]:
                        old.unlink(missing_ok=True)
            except OSError as error:
                common.log.warning("could not write %s: %s", path, error)
                self.metadata_file = ""

        self.housekeeper.submit(write)

    def store(self, message: Any, journal: Mapping[str, str | None] | None = None) -> None:
        if self.outlet is None:
            self.storage_problem = "the outbox could not be opened; see Status"
            common.fail("ICAT_Outbox", self.storage_problem, "MetadataManager")
        try:
            self.outlet.put(message, journal=journal or {})
            self.delivery_line = self.health().status_line(time.time())
            self.publish()
        except OutboxUnavailable as error:
            self.storage_problem = f"the outbox cannot keep messages: {error}"
            common.fail("ICAT_Outbox", f"{self.storage_problem}. Nothing was accepted.", "store")

    def logbook(self, category: elogbook.Category, text: Any) -> None:
        with common.client_errors("MetadataManager.logbook"):
            self.store(
                elogbook.notification_message(
                    id=common.new_id(),
                    created=common.epoch(),
                    category=category,
                    text=common.text_argument(text, "message"),
                    **self.logbook_address(),
                )
            )

    def logbook_address(self) -> dict[str, Any]:
        chart = self.chart
        return {
            "beamline": chart.settings.beamline,
            "proposal": chart.experiment.proposal or None,
            "dataset_name": chart.dataset_name or None,
            "machine": common.MACHINE,
            "software": common.SOFTWARE,
        }

    def health(self) -> DeliveryHealth:
        return self.outlet.health() if self.outlet is not None else CLOSED

    def publish(self) -> None:
        """Show the chart: State, Status, and change events for what the servers changed."""
        chart = self.chart
        state = STATES[chart.current_state_value]
        lines = (chart.status(), self.delivery_line, self.ingester_line(), *self.notes)
        status = "\n".join(line for line in lines if line)
        self.set_state(state)
        self.set_status(status)
        shown = (
            state,
            status,
            chart.experiment.proposal,
            chart.experiment.sample,
            chart.dataset_name,
            chart.dataset_name,
            chart.data_folder(),
        )
        if shown == self.shown:
            return
        if state != (self.shown[0] if self.shown else None):
            self.remember_message(f"{state}: {status.splitlines()[0]}")
        for name, value, before in zip(
            ("State", "Status", *FOLLOWED), shown, self.shown or (None,) * len(shown), strict=True
        ):
            if value != before and self.is_there_subscriber(name, EventType.CHANGE_EVENT):
                self.push_change_event(name, value)
        self.shown = shown

    def refresh(self) -> None:
        """Every second (adapters/tango/watcher.py): Status and the counts follow the
        outbox and the broker link without a call."""
        health = self.health()
        now = (health.undelivered, health.last_error or "")
        self.delivery_line = health.status_line(time.time())
        self.publish()
        self.push_health(health)
        if now != self.delivery_seen:
            self.tell_delivery(self.delivery_seen, now)
        self.delivery_seen = now

    def tell_delivery(self, before: tuple[int, str] | tuple[()], now: tuple[int, str]) -> None:
        """messageList: deliveries and delivery errors, as the health watcher sees them."""
        if before and now[0] < before[0] and not now[1]:
            self.remember_message(f"delivered; {now[0]} message(s) waiting")
        if now[1] and now[1] != (before[1] if before else ""):
            self.remember_message(f"delivery error: {now[1]}")


def main(args: list[str] | None = None) -> int:
    # The senders and the health watcher share the interpreter with Tango calls; a shorter
    # switch interval than the 5 ms default lets a call take the GIL sooner (EndDataset
    # median 5.1 -> 2.6 ms in bench/bench_delivery.py).
    sys.setswitchinterval(0.0005)
    from icat_servers.adapters.tango.startup import serve

    return serve(run, (MetadataManager,), sys.argv[1:] if args is None else args)
