"""The MetadataManager Tango device: one technique's datasets, registered with ICAT.

Each Tango call is translated into one chart event; the chart decides; the effects it
returns are stored durably before the call returns; the device shows the chart's state.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import tango
from tango import AttrWriteType, DevState, EventType
from tango.server import Device, attribute, command, run

from adapters.delivery import DeliveryHealth
from adapters.outbox_store import OutboxUnavailable
from adapters.tango import common, properties
from adapters.tango.health import HealthAttributes
from adapters.tango.housekeeping import Housekeeper
from adapters.tango.link import Leader
from adapters.tango.outlet import CLOSED, Outlet, reopened
from icatcore import config, elogbook, messages
from icatcore.definitions import parse_parameters
from icatcore.errors import ConfigurationError
from icatcore.outbox import Kind, icat_message
from statecharts.effects import Effect, RegisterDataset
from statecharts.metadata_manager import MetadataManagerChart, Settings

STATES = {
    "off": DevState.OFF,
    "standby": DevState.STANDBY,
    "on": DevState.ON,
    "running": DevState.RUNNING,
    "fault": DevState.FAULT,
}
FOLLOWED = ("proposal", "sampleName", "datasetName", "scanName", "dataFolder")
HEALTH_PERIOD_S = 1.0
QUICK_REFRESH_S = 0.1
KEPT_COPIES = 1000
PRUNE_EVERY = 100
RUNNING = "running dataset"
NAME = "datasetName"
"""The outbox journal's entries: the dataset in progress, and the memorized name."""


class MetadataManager(  # type: ignore[misc]
    HealthAttributes, common.Citizen, properties.declared("MetadataManager"), Device
):
    """Holds the dataset; registers it with ICAT when it ends, and never loses it."""

    def init_device(self) -> None:
        super().init_device()
        self.outlet: Outlet | None = None
        self.leader: Leader | None = None
        self.watcher: threading.Thread | None = None
        self.parameter_names: tuple[str, ...] = ()
        self.last_file = ""
        self.metadata_file = ""
        self.copies_written = 0
        self.shown: tuple[object, ...] = ()
        self.kept_files = 0
        self.stopping = threading.Event()
        self.stored = threading.Event()
        self.housekeeper = Housekeeper(f"{self.get_name()} housekeeping")
        self.delivery_line = ""
        self.chart = MetadataManagerChart(Settings(beamline="", meta_experiment="?"))
        for name in ("State", "Status", *FOLLOWED):
            self.set_change_event(name, True, False)
        problem = self.configure()
        self.kept: dict[str, str | None] = {
            key: self.outlet.recall(key) if self.outlet else None for key in (RUNNING, NAME)
        }
        self.chart.remember(self.kept[NAME] or "")
        running = self.kept[RUNNING]
        if running is not None:
            files: list[str] = self.outlet.recall_items(RUNNING) if self.outlet else []
            self.chart.handle("resume_dataset", journal=running, files=files)
            self.kept_files = len(files)
        if problem:
            self.chart.handle("fail", problem=problem)
        self.publish()
        self.follow()

    def follow(self) -> None:
        """Start following the MetaExperiment once what a restart kept is back in the chart."""
        if self.leader is not None and not self.leader.thread.is_alive():
            self.leader.start()

    def configure(self) -> str:
        """Read the properties and open what they name; the problem, if any, in words."""
        try:
            settings = config.metadata_manager(common.properties(self))
        except ConfigurationError as error:
            return str(error)
        self.settings = settings
        self.chart.settings = Settings(
            settings.beamline, settings.meta_experiment, settings.data_folder_pattern
        )
        self.add_parameter_attributes(settings.parameters)
        directory = common.state_directory(settings.outbox_directory, self.get_name())
        self.copies = directory / "metadata"
        try:
            self.outlet = reopened(self.outlet, directory, settings.delivery)
        except OutboxUnavailable as error:
            self.outlet = None
            return str(error)
        self.delivery_line = self.health().status_line(time.time())
        if self.leader is None or self.leader.leader != settings.meta_experiment:
            if self.leader is not None:
                self.leader.stop()
            self.leader = Leader(self.get_name(), settings.meta_experiment, self.found, self.lost)
        if self.watcher is None:
            self.watcher = threading.Thread(target=self.watch_health, daemon=True)
            self.watcher.start()
        return ""

    def delete_device(self) -> None:
        self.stopping.set()
        self.housekeeper.stop()
        if self.leader is not None:
            self.leader.stop()
        if self.outlet is not None:
            self.outlet.close()
        super().delete_device()

    # -- the MetaExperiment ---------------------------------------------------------

    # Tango calls hold the device monitor; found, lost and watch_health run in threads of
    # their own and take the same monitor, so one lock orders everything (a second lock
    # deadlocked with push_change_event: tests/e2e_delivery).

    def found(self, answer: str) -> None:
        with tango.AutoTangoMonitor(self):
            self.take_experiment(answer)

    def lost(self) -> None:
        with tango.AutoTangoMonitor(self):
            self.event("experiment_lost")

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
        return self.last_file

    @lastDataFile.write
    def lastDataFile(self, path: Any) -> None:
        path = common.text_argument(path, "lastDataFile")
        self.event("add_file", path=path)
        self.last_file = path

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
            self.run(self.chart.handle("reset", problem=self.configure()))
            self.publish()
            self.keep()
            self.follow()

    # -- the shell: event in, effects out, state shown ------------------------------

    def event(self, event: str, /, **arguments: object) -> None:
        with common.client_errors(f"MetadataManager.{event}"):
            try:
                self.run(self.chart.handle(event, **arguments))
                self.keep()
            finally:
                self.publish()

    def run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, RegisterDataset):
                self.register(effect)

    def register(self, effect: RegisterDataset) -> None:
        xml = messages.dataset_xml(effect.dataset, machine=common.MACHINE, software=common.SOFTWARE)
        message = icat_message(
            id=common.new_id(),
            created=common.epoch(),
            kind=Kind.DATASET,
            queue=self.settings.delivery.queue,
            xml=xml,
        )
        try:
            self.store(message, journal={RUNNING: None, NAME: self.chart.dataset_name})
        except tango.DevFailed:
            self.chart.handle(
                "storage_failed", problem=self.storage_problem, dataset=effect.dataset
            )
            raise
        self.note_stored(f"dataset {effect.dataset.name!r}", message.id)
        self.keep_copy(message.id, xml)

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
            self.kept.update(journal or {})
            if self.kept[RUNNING] is None:
                self.kept_files = 0
            self.stored.set()
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
        status = "\n".join(line for line in (chart.status(), self.delivery_line) if line)
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
        for name, value, before in zip(
            ("State", "Status", *FOLLOWED), shown, self.shown or (None,) * len(shown), strict=True
        ):
            if value != before and self.is_there_subscriber(name, EventType.CHANGE_EVENT):
                self.push_change_event(name, value)
        self.shown = shown

    def watch_health(self) -> None:
        """Outbox and broker change without a call: refresh Status and push the counts.

        Every second, and a tenth of a second after a message was stored, so that Status
        soon tells of it without a call paying for the outbox queries.
        """
        while not self.stopping.is_set():
            self.stored.wait(HEALTH_PERIOD_S)
            self.stored.clear()
            if self.stopping.wait(QUICK_REFRESH_S):
                return
            try:
                health = self.health()
            except OutboxUnavailable as error:  # closed by a shutdown, or the disk: next time
                common.log.warning("health refresh skipped: %s", error)
                continue
            try:
                with tango.AutoTangoMonitor(self):
                    self.delivery_line = health.status_line(time.time())
                    self.publish()
            except tango.DevFailed as error:  # a call held the monitor too long: next time
                common.log.warning("health refresh skipped: %s", error.args[0].desc)

    # -- what a restart takes back: kept in the outbox's journal ----------------------

    def keep(self) -> None:
        """Keep the running dataset and datasetName for a restart, at each change.

        In the outbox, not the Tango database: a few tens of microseconds instead of a
        database round trip, and in the same transaction as the registration that ends a
        dataset, so a crash can never bring back a name already registered. If the outbox
        cannot keep it, the call fails with ICAT_Outbox and the device goes to FAULT.
        """
        if self.outlet is None or not self.chart.keeps_journal():
            return
        running = self.chart.journal()
        name = self.chart.kept_dataset_name()
        now = {RUNNING: running, NAME: self.kept[NAME] if name is None else name}
        changed = {key: value for key, value in now.items() if value != self.kept[key]}
        files = self.chart.files[self.kept_files :] if running is not None else []
        if not changed and not files:
            return
        try:
            self.outlet.note(changed, {RUNNING: files})
        except OutboxUnavailable as error:
            self.storage_problem = f"the outbox cannot keep the running dataset: {error}"
            self.chart.handle("storage_failed", problem=self.storage_problem)
            self.publish()
            common.fail("ICAT_Outbox", f"{self.storage_problem}. Then call Reset.", "keep")
        self.kept.update(changed)
        self.kept_files = len(self.chart.files) if running is not None else 0


def main(args: list[str] | None = None) -> int:
    # The senders and the health watcher share the interpreter with Tango calls; a shorter
    # switch interval than the 5 ms default lets a call take the GIL sooner (EndDataset
    # median 5.1 -> 2.6 ms in bench/bench_delivery.py).
    sys.setswitchinterval(0.0005)
    run((MetadataManager,), args=["MetadataManager", *(sys.argv[1:] if args is None else args)])
    return 0
