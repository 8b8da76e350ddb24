"""One MetaExperiment and one follower, wired as the devices wire them, in pure Python.

The stateful rules run against this model; the device tests run the same rules against
real Tango devices and compare every step with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from icat_servers.icatcore.definitions import parse_parameters
from icat_servers.icatcore.errors import InvalidInput
from icat_servers.icatcore.records import DatasetRecord
from icat_servers.statecharts.effects import (
    AnnounceInvestigation,
    Effect,
    KeepDatasetName,
    KeepFile,
    KeepParentLocation,
    KeepRunningDataset,
    PublishExperiment,
    Refused,
    RegisterDataset,
)
from icat_servers.statecharts.meta_experiment import MetaExperimentChart
from icat_servers.statecharts.meta_experiment import Settings as MetaSettings
from icat_servers.statecharts.metadata_manager import MetadataManagerChart, Settings

BEAMLINE = "id00"
META = "id00/metaexp/test"
PATTERN = "{dataRoot}/{proposal}/{beamlineID}/{sampleName}/{datasetName}"


class Rejected(Exception):
    """A call the servers refused, with the text the client reads.

    `bad_input` is True when the input itself was refused (the device's ICAT_InvalidInput),
    False when the call is not allowed in the current state.
    """

    def __init__(self, why: str, *, bad_input: bool = False) -> None:
        super().__init__(why)
        self.bad_input = bad_input


@dataclass(frozen=True)
class Unreadable:
    """An attribute read the device refused, with the text the client reads."""

    why: str


@dataclass(frozen=True)
class Observation:
    state: str
    proposal: str
    sample: str
    data_root: str
    dataset_name: str | Unreadable
    data_folder: str
    files: tuple[str, ...]


@dataclass
class Clock:
    """A clock the test owns: each reading is one second after the last."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 26, 12, tzinfo=UTC))

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class PureSession:
    def __init__(self) -> None:
        self.clock = Clock()
        self.meta = MetaExperimentChart(MetaSettings(BEAMLINE))
        self.manager = MetadataManagerChart(Settings(BEAMLINE, META, PATTERN))
        self.manager.handle("experiment_changed", experiment=self.meta.experiment, at=self.clock())
        self.registered: list[DatasetRecord] = []
        self.announced = 0
        self.meta_reachable = True
        self.kept_name: KeepDatasetName | None = None
        self.kept_parent = ""
        self.kept_running: str | None = None
        self.kept_files: list[str] = []

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, PublishExperiment):
                self._run(
                    self.manager.handle(
                        "experiment_changed", experiment=effect.experiment, at=self.clock()
                    )
                )
            elif isinstance(effect, RegisterDataset):
                self.registered.append(effect.dataset)
                self.kept_running, self.kept_files = None, []
            elif isinstance(effect, AnnounceInvestigation):
                self.announced += 1
            else:
                self._keep(effect)

    def _keep(self, effect: Effect) -> None:
        """The journal, as the device's outbox keeps it."""
        if isinstance(effect, KeepDatasetName):
            self.kept_name = effect
        elif isinstance(effect, KeepParentLocation):
            self.kept_parent = effect.parent
        elif isinstance(effect, KeepRunningDataset):
            self.kept_running = effect.journal
            if effect.files is not None:
                self.kept_files = list(effect.files)
        elif isinstance(effect, KeepFile):
            self.kept_files.append(effect.path)

    def disrupt(self, kind: str) -> None:
        """What happens to a server that no client caused (tests/disruptions.py): only a
        restart of the MetadataManager is more than nothing to the pure charts."""
        if kind == "restart manager":
            self.restart_manager()

    def restart_manager(self) -> None:
        """A new process: a new chart from the journal, then the MetaExperiment asked."""
        chart = MetadataManagerChart(self.manager.settings)
        name = self.kept_name or KeepDatasetName("", "", "")
        chart.handle(
            "restore",
            dataset_name=name.name,
            proposal=name.proposal,
            sample=name.sample,
            parent=self.kept_parent,
        )
        if self.kept_running is not None:
            chart.handle("resume_dataset", journal=self.kept_running, files=self.kept_files)
        self.manager = chart
        if self.meta_reachable:
            self.find_meta()
        else:
            self._manager("experiment_lost")

    def _meta(self, event: str, **arguments: object) -> None:
        if not self.meta_reachable:
            raise Rejected(f"MetaExperiment {META} is not running")
        try:
            self._run(self.meta.handle(event, **arguments))
        except Refused as error:
            raise Rejected(str(error)) from None
        except InvalidInput as error:
            raise Rejected(str(error), bad_input=True) from None

    def _manager(self, event: str, **arguments: object) -> None:
        try:
            self._run(self.manager.handle(event, **arguments))
        except Refused as error:
            raise Rejected(str(error)) from None
        except InvalidInput as error:
            raise Rejected(str(error), bad_input=True) from None

    def write_proposal(self, name: str) -> None:
        self._meta("write_proposal", name=name, at=self.clock())

    def write_sample(self, name: str) -> None:
        self._meta("write_sample", name=name)

    def write_data_root(self, path: str) -> None:
        self._meta("write_data_root", path=path)

    def write_dataset_name(self, name: str) -> None:
        self._manager("name_dataset", name=name)

    def start_dataset(self) -> None:
        self._manager("start_dataset", at=self.clock())

    def end_dataset(self) -> None:
        self._manager("end_dataset", at=self.clock())

    def abort_dataset(self) -> None:
        self._manager("abort_dataset", at=self.clock())

    def set_parameters(self, text: str) -> None:
        try:
            values = parse_parameters(text)
        except InvalidInput as error:
            raise Rejected(str(error), bad_input=True) from None
        self._manager("set_parameters", values=values)

    def add_file(self, path: str) -> None:
        self._manager("add_file", path=path)

    def set_parent_location(self, parent: str) -> None:
        self._manager("set_parent_location", parent=parent)

    def clear_parent_location(self) -> None:
        self._manager("clear_parent_location")

    def lose_meta(self) -> None:
        self.meta_reachable = False
        self._manager("experiment_lost")

    def find_meta(self) -> None:
        self.meta_reachable = True
        self._manager("experiment_changed", experiment=self.meta.experiment, at=self.clock())

    def break_configuration(self, problem: str) -> None:
        self._manager("fail", problem=problem)

    def reset(self, problem: str) -> None:
        self._manager("reset", problem=problem)

    def read_dataset_name(self) -> str | Unreadable:
        try:
            return self.manager.read_dataset_name()
        except Refused as refusal:
            return Unreadable(str(refusal))

    def observe(self) -> Observation:
        chart = self.manager
        return Observation(
            state=chart.state_name,
            proposal=self.meta.experiment.proposal,
            sample=self.meta.experiment.sample,
            data_root=self.meta.experiment.data_root,
            dataset_name=self.read_dataset_name(),
            data_folder=chart.data_folder(),
            files=tuple(chart.files),
        )
