"""The MetadataManager: one technique's datasets, following one MetaExperiment.

The state follows the facts (SPEC, "MetadataManager / States"). The events of a beamline
session name their target by guards on what they change; the events that change the
experiment (and Reset) are followed by `follow_facts`, which moves the state to where the
facts say it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statemachine import State, StateMachine

from icat_servers.icatcore import definitions
from icat_servers.icatcore.errors import ConfigurationError, InvalidInput
from icat_servers.icatcore.folders import DEFAULT_PATTERN, check_pattern, data_folder
from icat_servers.icatcore.records import (
    DatasetRecord,
    Experiment,
    ParameterValue,
    sample_specified,
)
from icat_servers.statecharts.effects import (
    Effect,
    KeepDatasetName,
    KeepFile,
    KeepParentLocation,
    KeepRunningDataset,
    Refused,
    RegisterDataset,
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The configuration the chart needs, already parsed and checked."""

    beamline: str
    meta_experiment: str
    data_folder_pattern: str = DEFAULT_PATTERN


class MetadataManagerChart(StateMachine):  # type: ignore[misc]
    off = State("OFF", initial=True)
    standby = State("STANDBY")
    on = State("ON")
    running = State("RUNNING")
    fault = State("FAULT")

    follow_facts = (
        off.to(on, cond="dataset_named")
        | off.to(standby, cond="experiment_open")
        | off.to.itself(internal=True)
        | standby.to(on, cond="dataset_named")
        | standby.to(off, unless="experiment_open")
        | standby.to.itself(internal=True)
        | on.to(off, unless="experiment_open")
        | on.to(standby, unless="dataset_named")
        | on.to.itself(internal=True)
        | running.to.itself(internal=True)
        | fault.to.itself(internal=True)
    )

    experiment_changed = (
        running.to(standby, cond="experiment_differs", before="end_for_new_experiment")
        | running.to.itself(internal=True)
        | off.to.itself(internal=True)
        | standby.to.itself(internal=True)
        | on.to.itself(internal=True)
        | fault.to.itself(
            internal=True,
            cond=["dataset_started", "experiment_differs"],
            before="end_for_new_experiment",
        )
        | fault.to.itself(internal=True)
    )
    configure = (
        fault.to.itself(internal=True, cond="still_broken")
        | fault.to(running, cond="dataset_started")
        | fault.to(off)
        | off.to(fault, cond="still_broken")
        | standby.to(fault, cond="still_broken")
        | on.to(fault, cond="still_broken")
        | running.to(fault, cond="still_broken")
        | off.to.itself(internal=True)
        | standby.to.itself(internal=True)
        | on.to.itself(internal=True)
        | running.to.itself(internal=True)
    )
    experiment_lost = (
        off.to.itself(internal=True)
        | standby.to.itself(internal=True)
        | on.to.itself(internal=True)
        | running.to.itself(internal=True)
        | fault.to.itself(internal=True)
    )
    # A validator sits on the first transition from each state: it runs before any guard.
    name_dataset = (
        standby.to(on, cond=["sample_known", "names_a_dataset"], validators="valid_dataset_name")
        | standby.to.itself(internal=True, cond="sample_known")
        | on.to(standby, unless="names_a_dataset", validators="valid_dataset_name")
        | on.to.itself(internal=True)
    )
    set_parameters = (
        standby.to.itself(internal=True, validators="valid_values")
        | on.to.itself(internal=True, validators="valid_values")
        | running.to.itself(internal=True, validators="valid_values")
    )
    add_file = running.to.itself(internal=True, validators="valid_file")
    set_parent_location = (
        off.to.itself(internal=True, validators="valid_parent_location")
        | standby.to.itself(internal=True, validators="valid_parent_location")
        | on.to.itself(internal=True, validators="valid_parent_location")
    )
    clear_parent_location = (
        off.to.itself(internal=True)
        | standby.to.itself(internal=True)
        | on.to.itself(internal=True)
    )
    start_dataset = on.to(running)
    end_dataset = running.to(standby, cond="experiment_open") | running.to(off)
    abort_dataset = running.to(standby, cond="experiment_open") | running.to(off)
    fail = (
        off.to(fault)
        | standby.to(fault)
        | on.to(fault)
        | running.to(fault)
        | fault.to.itself(internal=True)
    )
    storage_failed = fault.from_(off, standby, on, running, fault)
    restore = off.to.itself(internal=True)
    resume_dataset = off.to(running)
    reset = (
        fault.to.itself(internal=True, cond="still_broken")
        | fault.to(running, cond="dataset_started")
        | fault.to(off)
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.linked = False
        self.unreachable = "cannot be reached; waiting for it"
        self.experiment = Experiment()
        self.dataset_name = ""
        self.parameters: dict[str, ParameterValue] = {}
        self.files: list[str] = []
        self.last_file = ""
        self.parent_location = ""
        self.started_at: datetime | None = None
        self.location = ""
        self.problem = ""
        self.unsaved: list[DatasetRecord] = []
        self.remembered: KeepDatasetName | None = None
        self.effects: list[Effect] = []
        super().__init__()

    # -- guards: named after the SPEC's words --------------------------------------

    def experiment_open(self) -> bool:
        return self.linked and bool(self.experiment.proposal)

    def sample_known(self) -> bool:
        return sample_specified(self.experiment.sample)

    def dataset_named(self) -> bool:
        """ON needs the experiment too: an unreachable MetaExperiment means OFF (SPEC)."""
        return self.experiment_open() and self.sample_known() and bool(self.dataset_name)

    def dataset_started(self) -> bool:
        return self.started_at is not None

    def experiment_differs(self, experiment: Experiment) -> bool:
        return (experiment.proposal, experiment.sample) != (
            self.experiment.proposal,
            self.experiment.sample,
        )

    def still_broken(self, problem: str = "") -> bool:
        return bool(problem)

    def names_a_dataset(self, name: str) -> bool:
        return bool(name)

    # -- validators: bad input changes nothing -------------------------------------

    def valid_dataset_name(self, name: str) -> None:
        definitions.check_dataset_name(name)

    def valid_values(self, values: Mapping[str, ParameterValue]) -> None:
        unknown = definitions.unknown_parameters(values)
        if unknown:
            raise InvalidInput(
                f"unknown ICAT parameter name(s): {', '.join(unknown)}; "
                "use names from icat-esrf-definitions"
            )
        for name, value in values.items():
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, str):
                    definitions.check_text(name, item, multiline=True)

    def valid_file(self, path: str) -> None:
        definitions.check_text("lastDataFile", path)

    def valid_parent_location(self, parent: str) -> None:
        """An absolute path, or a pattern of dataFolderPattern's fields."""
        definitions.check_text("dataset parent location", parent)
        if not parent.startswith(("/", "{")):
            raise InvalidInput(
                f"dataset parent location {parent!r} is neither an absolute path nor a "
                "pattern: give /path/to/parent or a pattern such as {dataRoot}/{proposal}"
            )
        try:
            check_pattern(parent)
        except ConfigurationError as error:
            raise InvalidInput(str(error).replace("dataFolderPattern", "parent location")) from None

    # -- actions -------------------------------------------------------------------

    def on_experiment_changed(self, experiment: Experiment, at: datetime | None = None) -> None:
        if self.experiment_differs(experiment) and self.dataset_name:
            self.dataset_name = ""
            self._keep_name()
        self.experiment = experiment
        self.linked = True
        remembered, self.remembered = self.remembered, None
        if (
            remembered is not None
            and (remembered.proposal, remembered.sample) == (experiment.proposal, experiment.sample)
            and self.sample_known()
            and not self.dataset_started()
            and not self.dataset_name
        ):
            self.dataset_name = remembered.name

    def on_experiment_lost(self, why: str = "") -> None:
        self.linked = False
        self.unreachable = why or "cannot be reached; waiting for it"

    def on_configure(
        self, settings: Settings | None = None, problem: str = "", source: State | None = None
    ) -> None:
        """Init: the properties read again; a fixed FAULT is left as Reset leaves it."""
        if settings is not None:
            if settings.meta_experiment != self.settings.meta_experiment:
                self.linked = False
            self.settings = settings
        if source is self.fault:
            self.on_reset(problem)
        else:
            self.problem = problem

    def on_restore(self, dataset_name: str, proposal: str, sample: str, parent: str = "") -> None:
        """What a restart kept: the name applies only to the experiment it was named under."""
        self.remembered = KeepDatasetName(dataset_name, proposal, sample) if dataset_name else None
        self.parent_location = parent

    # The state follows the facts these events changed.

    def after_experiment_changed(self) -> None:
        self.follow_facts()

    def after_experiment_lost(self) -> None:
        self.follow_facts()

    def after_configure(self) -> None:
        self.follow_facts()

    def after_reset(self) -> None:
        self.follow_facts()

    def on_name_dataset(self, name: str) -> None:
        self.remembered = None
        if name != self.dataset_name:
            self.dataset_name = name
            self._keep_name()

    def on_set_parameters(self, values: Mapping[str, ParameterValue]) -> None:
        self.parameters.update(values)
        self._keep_running()

    def on_add_file(self, path: str) -> None:
        self.files.append(path)
        self.last_file = path
        self.effects.append(KeepFile(path))

    def on_set_parent_location(self, parent: str) -> None:
        self.parent_location = parent.rstrip("/") or "/"
        self.effects.append(KeepParentLocation(self.parent_location))

    def on_clear_parent_location(self) -> None:
        if self.parent_location:
            self.parent_location = ""
            self.effects.append(KeepParentLocation(""))

    def on_start_dataset(self, at: datetime) -> None:
        self.remembered = None
        self.location = self.data_folder()
        self.started_at = at
        self.last_file = ""
        self._keep_running()

    def on_end_dataset(self, at: datetime) -> None:
        self._register(at, complete=True)

    def on_abort_dataset(self, at: datetime) -> None:
        self._register(at, complete=False)

    def end_for_new_experiment(self, at: datetime) -> None:
        self._register(at, complete=True)

    def on_fail(self, problem: str) -> None:
        self.problem = problem

    def on_storage_failed(self, problem: str, dataset: DatasetRecord | None = None) -> None:
        self.problem = problem
        if dataset is not None:
            self.unsaved.append(dataset)

    def on_reset(self, problem: str = "", settings: Settings | None = None) -> None:
        """Once fixed: store what could not be stored, and write the journal anew."""
        if settings is not None:
            self.settings = settings
        self.problem = problem
        if not problem:
            self.effects.extend(RegisterDataset(dataset) for dataset in self.unsaved)
            self.unsaved.clear()
            self._keep_name()
            self.effects.append(KeepParentLocation(self.parent_location))
            journal = self.journal()
            if journal is not None:
                self.effects.append(KeepRunningDataset(journal, tuple(self.files)))

    def _keep_name(self) -> None:
        self.effects.append(
            KeepDatasetName(self.dataset_name, self.experiment.proposal, self.experiment.sample)
        )

    def _keep_running(self) -> None:
        journal = self.journal()
        if journal is not None:
            self.effects.append(KeepRunningDataset(journal))

    def _register(self, at: datetime, *, complete: bool) -> None:
        """The cleared datasetName is kept before the registration: the shell writes both
        in one transaction, so a crash can never bring back a name already registered."""
        assert self.started_at is not None
        registration = RegisterDataset(
            DatasetRecord(
                proposal=self.experiment.proposal,
                beamline=self.settings.beamline,
                name=self.dataset_name,
                location=self.location,
                sample=self.experiment.sample,
                start=self.started_at,
                end=at,
                complete=complete,
                parameters=dict(self.parameters),
                datafiles=tuple(self.files),
            )
        )
        self.remembered = None
        self.dataset_name = ""
        self._keep_name()
        self.effects.append(registration)
        self.parameters = {}
        self.files = []
        self.started_at = None
        self.location = ""

    # -- what the device shows -----------------------------------------------------

    @property
    def state_name(self) -> str:
        return str(self.current_state.name)

    def folder_pattern(self) -> str:
        """dataFolderPattern, or PARENT/{datasetName} while a parent location is set."""
        if self.parent_location:
            return self.parent_location.rstrip("/") + "/{datasetName}"
        return self.settings.data_folder_pattern

    def data_folder(self) -> str:
        if self.dataset_started():
            return self.location
        if self.current_state_value == "off":
            return self.folder_pattern()
        return data_folder(
            self.folder_pattern(),
            data_root=self.experiment.data_root,
            proposal=self.experiment.proposal,
            beamline=self.settings.beamline,
            sample=self.experiment.sample,
            dataset=self.dataset_name,
        )

    def status(self) -> str:
        return describe(self)

    def read_dataset_name(self) -> str:
        """datasetName, which can be read only once a sample is specified (SPEC)."""
        if not self.sample_known():
            raise Refused(why_not(self, "read_dataset_name"))
        return self.dataset_name

    def journal(self) -> str | None:
        """The running dataset but its files, as text, for a restart to resume it.

        None when no dataset runs. The files are kept one by one beside it (a dataset can
        have thousands; rewriting them all at each file would cost more at each file).
        """
        if self.started_at is None:
            return None
        return json.dumps(
            {
                "proposal": self.experiment.proposal,
                "sample": self.experiment.sample,
                "dataRoot": self.experiment.data_root,
                "datasetName": self.dataset_name,
                "start": self.started_at.isoformat(),
                "location": self.location,
                "parameters": self.parameters,
            }
        )

    def on_resume_dataset(self, journal: str, files: Sequence[str] = ()) -> None:
        entry = json.loads(journal)
        self.experiment = Experiment(entry["proposal"], entry["sample"], entry["dataRoot"])
        self.dataset_name = entry["datasetName"]
        self.started_at = datetime.fromisoformat(entry["start"])
        self.location = entry["location"]
        self.parameters = dict(entry["parameters"])
        self.files = [*entry.get("files", ()), *files]
        self.last_file = self.files[-1] if self.files else ""
        self.linked = False

    def take_effects(self) -> list[Effect]:
        effects, self.effects = self.effects, []
        return effects

    def handle(self, event: str, /, **arguments: Any) -> list[Effect]:
        """Send one event; a refusal raises `Refused` with the words the client will read."""
        try:
            self.send(event, **arguments)
        except self.TransitionNotAllowed:
            raise Refused(why_not(self, event)) from None
        return self.take_effects()


EVENT_NAMES = {
    "name_dataset": "datasetName cannot be written",
    "read_dataset_name": "datasetName cannot be read",
    "set_parameters": "parameters cannot be set",
    "add_file": "lastDataFile cannot be written",
    "start_dataset": "StartDataset is not allowed",
    "end_dataset": "EndDataset is not allowed",
    "abort_dataset": "AbortDataset is not allowed",
    "reset": "Reset is not needed",
    "set_parent_location": "the dataset parent location cannot change",
    "clear_parent_location": "the dataset parent location cannot change",
}


def why_not(chart: MetadataManagerChart, event: str) -> str:
    """The refusal text: what was asked, the state, what is missing, what to do."""
    asked = EVENT_NAMES.get(event, f"{event} is not allowed")
    return f"{asked} in {chart.state_name}: {_missing(chart, event)}"


def _missing(chart: MetadataManagerChart, event: str) -> str:
    state = chart.current_state_value
    meta = chart.settings.meta_experiment
    if state == "fault":
        return f"the device is in FAULT ({chart.problem}); fix it, then call Reset"
    if event == "reset":
        return "Reset only leaves FAULT"
    if state == "running":
        fixed = (
            " (the running dataset's folder is already fixed)"
            if event.endswith("parent_location")
            else ""
        )
        return (
            f"dataset {chart.dataset_name!r} is RUNNING{fixed}; "
            "call EndDataset or AbortDataset first"
        )
    if event in ("end_dataset", "abort_dataset", "add_file"):
        return "no dataset is running; call StartDataset first"
    if not chart.linked:
        return f"MetaExperiment {meta} {chart.unreachable}"
    if not chart.experiment.proposal:
        return f"no proposal; write proposal on {meta}"
    if not chart.sample_known():
        return f"the sample is not specified; write sample on {meta}"
    return "the dataset is not named; write datasetName first"


def describe(chart: MetadataManagerChart) -> str:
    """The chart's part of Status: one line a beamline scientist understands."""
    state = chart.current_state_value
    meta = chart.settings.meta_experiment
    experiment = chart.experiment
    if state == "fault":
        return f"FAULT: {chart.problem}. Fix it, then call Reset."
    if state == "running":
        running = (
            f"Dataset {chart.dataset_name!r} is RUNNING for proposal {experiment.proposal}, "
            f"sample {experiment.sample!r}, in {chart.location}"
        )
        if not chart.linked:
            running += f"; MetaExperiment {meta} {chart.unreachable}"
        return running
    if state == "on":
        return (
            f"Ready: dataset {chart.dataset_name!r} for proposal {experiment.proposal}, "
            f"sample {experiment.sample!r}; call StartDataset"
        )
    if state == "standby":
        if not chart.sample_known():
            return (
                f"Proposal {experiment.proposal}: the sample is not specified "
                f"(write sample on {meta})"
            )
        return f"Proposal {experiment.proposal}, sample {experiment.sample!r}: write datasetName"
    if not chart.linked:
        return f"OFF: MetaExperiment {meta} {chart.unreachable}"
    return f"OFF: no proposal on {meta}"
