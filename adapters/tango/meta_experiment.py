"""The MetaExperiment Tango device: proposal, sample and data root of the beamline session."""

from __future__ import annotations

import sys

import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, run

from icat_servers.adapters.delivery import Delivery, reopened
from icat_servers.adapters.outbox_store import OutboxUnavailable
from icat_servers.adapters.tango import common, properties
from icat_servers.adapters.tango.health import HealthAttributes
from icat_servers.adapters.tango.link import Followers
from icat_servers.adapters.tango.outbox_commands import OutboxCommands
from icat_servers.adapters.tango.watcher import Watcher
from icat_servers.icatcore import config, messages
from icat_servers.icatcore.outbox import Kind, icat_message
from icat_servers.icatcore.records import Experiment
from icat_servers.statecharts.effects import AnnounceInvestigation, Effect, PublishExperiment
from icat_servers.statecharts.meta_experiment import MetaExperimentChart, Settings

STATES = {"on": DevState.ON, "fault": DevState.FAULT}
MEMORIZED = {"proposal": "proposal", "sample": "sample", "dataRoot": "data_root"}


class MetaExperiment(  # type: ignore[misc]
    OutboxCommands, HealthAttributes, common.Citizen, properties.declared("MetaExperiment"), Device
):
    """Holds the proposal (ICAT investigation), sample and data root; its followers obey it."""

    chart: MetaExperimentChart
    health_thread = False
    """The device's Watcher pushes the health events every second (adapters/tango/watcher.py)."""

    def init_device(self) -> None:
        """A new process takes back the memorized experiment; `Init` keeps it as it is.
        Either way the followers are found and told before the device accepts calls."""
        super().init_device()
        if not hasattr(self, "chart"):
            self.audience = Followers(self.get_name())
            self.outlet: Delivery | None = None
            self.shown: tuple[object, ...] = ()
            self.notes: tuple[str, ...] = ()
            self.watcher = Watcher(self, self.refresh)
            self.chart = MetaExperimentChart(Settings(beamline=""))
            for name in ("State", "Status", *MEMORIZED):
                self.set_change_event(name, True, False)
            self.chart.handle("restore", experiment=self.memorized())
        settings, problem = self.configure()
        self.event("configure", settings=settings, problem=problem)
        self.audience.discover(properties.database(), self.chart.experiment)
        self.watcher.start()

    def delete_device(self) -> None:
        """Init keeps everything; only a server that shuts down lets go."""
        if not tango.Util.instance().is_svr_shutting_down():
            return
        self.audience.close()
        self.watcher.stop()
        if self.outlet is not None:
            self.outlet.close()
        super().delete_device()

    def configure(self) -> tuple[Settings | None, str]:
        """Read the properties and open the outbox; the problem, if any, in words."""
        settings, problem, self.notes = common.read_configuration(self, config.meta_experiment)
        if settings is None:
            return None, problem
        directory = common.state_directory(settings.outbox_directory, self.get_name())
        try:
            self.outlet = reopened(self.outlet, directory, settings.delivery)
        except OutboxUnavailable as error:
            self.outlet = None
            return Settings(beamline=settings.beamline), str(error)
        return Settings(beamline=settings.beamline), ""

    # -- attributes -----------------------------------------------------------------

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, memorized=True)
    def proposal(self) -> str:
        return self.chart.experiment.proposal

    @proposal.write
    def proposal(self, name: str) -> None:
        self.event("write_proposal", name=common.text_argument(name, "proposal"), at=common.now())

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, memorized=True)
    def sample(self) -> str:
        return self.chart.experiment.sample

    @sample.write
    def sample(self, name: str) -> None:
        self.event("write_sample", name=common.text_argument(name, "sample"))

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, memorized=True)
    def dataRoot(self) -> str:
        return self.chart.experiment.data_root

    @dataRoot.write
    def dataRoot(self, path: str) -> None:
        self.event("write_data_root", path=common.text_argument(path, "dataRoot"))

    @attribute(dtype=(str,), max_dim_x=256)
    def followers(self) -> list[str]:
        """The MetadataManagers this device tells every change."""
        return self.audience.names()

    # -- commands -------------------------------------------------------------------

    @command(dtype_in=str, dtype_out=str)
    def Follow(self, follower: str) -> str:
        """A MetadataManager asks to be told every change; the answer is the experiment now."""
        self.audience.add(follower)
        return self.audience.encode(self.chart.experiment)

    @command
    def Reset(self) -> None:
        """Re-read the configuration, reopen the outbox, and leave FAULT if all is well."""
        settings, problem = self.configure()
        self.event("reset", problem=problem, settings=settings)

    # -- the shell: event in, effects out -------------------------------------------

    def event(self, event: str, /, **arguments: object) -> None:
        with common.client_errors(f"MetaExperiment.{event}"):
            try:
                self.run(self.chart.handle(event, **arguments))
            finally:
                self.publish_state()

    def run(self, effects: list[Effect]) -> None:
        """In the chart's order: an announcement is stored before anything is published
        or memorized; if it cannot be, the rest waits for Reset."""
        for effect in effects:
            if isinstance(effect, AnnounceInvestigation):
                self.announce(effect)
            elif isinstance(effect, PublishExperiment):
                self.memorize(effect.experiment)
                self.audience.publish(effect.experiment)
                self.push_experiment(effect.experiment)

    def announce(self, effect: AnnounceInvestigation) -> None:
        message = icat_message(
            id=common.new_id(),
            created=common.epoch(),
            kind=Kind.INVESTIGATION,
            queue=self.outlet.queue if self.outlet is not None else "",
            xml=messages.investigation_xml(effect.investigation),
        )
        try:
            if self.outlet is None:
                raise OutboxUnavailable("the outbox could not be opened; see Status")
            self.outlet.put(message)
        except OutboxUnavailable as error:
            problem = f"the outbox cannot keep the investigation message: {error}"
            self.chart.handle("storage_failed", problem=problem, investigation=effect.investigation)
            common.fail("ICAT_Outbox", f"{problem}. Then call Reset.", "MetaExperiment")
        self.note_stored(f"investigation start of {effect.investigation.proposal!r}", message.id)

    def refresh(self) -> None:
        """Every second (adapters/tango/watcher.py): Status and the health events follow
        the outbox and the broker link without a call."""
        self.publish_state()
        self.push_health()

    def publish_state(self) -> None:
        state = STATES[self.chart.current_state_value]
        status = self.chart.status()
        if self.outlet is not None:
            status = f"{status}\n{self.outlet.status_line()}"
        status = "\n".join(line for line in (status, self.ingester_line(), *self.notes) if line)
        self.set_state(state)
        self.set_status(status)
        if (state, status) != self.shown:
            self.push_change_event("State", state)
            self.push_change_event("Status", status)
            self.shown = (state, status)

    def push_experiment(self, experiment: Experiment) -> None:
        self.push_change_event("proposal", experiment.proposal)
        self.push_change_event("sample", experiment.sample)
        self.push_change_event("dataRoot", experiment.data_root)

    # -- memorized attributes: kept in the Tango database, like Tango's own ---------

    def memorized(self) -> Experiment:
        database = properties.database()
        if database is None:  # -nodb: nothing was kept
            return Experiment()
        try:
            found = database.get_device_attribute_property(self.get_name(), list(MEMORIZED))
        except tango.DevFailed:
            return Experiment()
        values = {
            field: (found.get(name, {}).get("__value") or [""])[0]
            for name, field in MEMORIZED.items()
        }
        return Experiment(**values)

    def memorize(self, experiment: Experiment) -> None:
        """The chart changed attributes no client wrote: keep them for a restart too."""
        database = properties.database()
        if database is None:  # -nodb: nowhere to keep it
            return
        try:
            database.put_device_attribute_property(
                self.get_name(),
                {
                    name: {"__value": [getattr(experiment, field)]}
                    for name, field in MEMORIZED.items()
                },
            )
        except tango.DevFailed as error:
            common.log.warning("could not memorize the experiment: %s", error.args[0].desc)


def main(args: list[str] | None = None) -> int:
    from icat_servers.adapters.tango.startup import serve

    return serve(run, (MetaExperiment,), sys.argv[1:] if args is None else args)
