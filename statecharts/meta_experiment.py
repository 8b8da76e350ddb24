"""The MetaExperiment: the proposal, sample and data root of one beamline session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statemachine import State, StateMachine

from icat_servers.icatcore import definitions
from icat_servers.icatcore.records import (
    DEFAULT_DATA_ROOT,
    SAMPLE_PLACEHOLDER,
    Experiment,
    InvestigationRecord,
)
from icat_servers.statecharts.effects import (
    AnnounceInvestigation,
    Effect,
    PublishExperiment,
    Refused,
)


@dataclass(frozen=True, slots=True)
class Settings:
    beamline: str


class MetaExperimentChart(StateMachine):  # type: ignore[misc]
    on = State("ON", initial=True)
    fault = State("FAULT")

    write_proposal = (
        on.to.itself(
            internal=True,
            cond="opens_new_proposal",
            validators="valid_proposal",
            on="open_proposal",
        )
        | on.to.itself(internal=True, cond="closes_proposal", on="close_proposal")
        | on.to.itself(internal=True)
    )
    write_sample = on.to.itself(
        internal=True, cond="sample_changes", validators="valid_sample", on="change_sample"
    ) | on.to.itself(internal=True)
    write_data_root = on.to.itself(
        internal=True, cond="data_root_changes", validators="valid_data_root", on="move_data_root"
    ) | on.to.itself(internal=True)
    fail = on.to(fault) | fault.to.itself(internal=True)
    storage_failed = fault.from_(on, fault)
    reset = fault.to.itself(internal=True, cond="still_broken") | fault.to(on)
    configure = (
        fault.to.itself(internal=True, cond="still_broken")
        | fault.to(on)
        | on.to(fault, cond="still_broken")
        | on.to.itself(internal=True)
    )
    restore = on.to.itself(internal=True) | fault.to.itself(internal=True)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.experiment = Experiment()
        self.problem = ""
        self.unsaved: list[InvestigationRecord] = []
        self.effects: list[Effect] = []
        super().__init__()

    # -- guards ---------------------------------------------------------------------

    def opens_new_proposal(self, name: str) -> bool:
        return bool(name) and name != self.experiment.proposal

    def closes_proposal(self, name: str) -> bool:
        return not name and self.experiment != Experiment()

    def sample_changes(self, name: str) -> bool:
        return name != self.experiment.sample

    def data_root_changes(self, path: str) -> bool:
        return path != self.experiment.data_root

    def still_broken(self, problem: str = "") -> bool:
        return bool(problem)

    # -- validators -----------------------------------------------------------------

    def valid_proposal(self, name: str) -> None:
        """A proposal becomes a path and an ICAT key: same rules as a dataset name."""
        definitions.check_text("proposal", name, max_length=64)

    def valid_sample(self, name: str) -> None:
        definitions.check_text("sample", name, max_length=255)

    def valid_data_root(self, path: str) -> None:
        definitions.check_text("dataRoot", path)

    # -- actions: only a real change reaches the followers --------------------------

    def open_proposal(self, name: str, at: datetime) -> None:
        """The announcement first: nothing is published or memorized before it is stored."""
        self.effects.append(
            AnnounceInvestigation(InvestigationRecord(name, self.settings.beamline, at))
        )
        self._publish(Experiment(name, SAMPLE_PLACEHOLDER, DEFAULT_DATA_ROOT))

    def close_proposal(self) -> None:
        self._publish(Experiment())

    def change_sample(self, name: str) -> None:
        self._publish(Experiment(self.experiment.proposal, name, self.experiment.data_root))

    def move_data_root(self, path: str) -> None:
        self._publish(Experiment(self.experiment.proposal, self.experiment.sample, path))

    def on_fail(self, problem: str) -> None:
        self.problem = problem

    def on_storage_failed(self, problem: str, investigation: InvestigationRecord) -> None:
        """The announcement could not be stored: keep it, and the experiment, for Reset."""
        self.problem = problem
        self.unsaved.append(investigation)

    def on_reset(self, problem: str = "", settings: Settings | None = None) -> None:
        """Once fixed: store what could not be stored, then publish the experiment."""
        if settings is not None:
            self.settings = settings
        self.problem = problem
        if not problem and self.unsaved:
            self.effects.extend(AnnounceInvestigation(record) for record in self.unsaved)
            self.unsaved.clear()
            self.effects.append(PublishExperiment(self.experiment))

    def on_configure(
        self, settings: Settings | None = None, problem: str = "", source: State | None = None
    ) -> None:
        """Init: the properties read again; a fixed FAULT is left as Reset leaves it."""
        if source is self.fault:
            self.on_reset(problem, settings)
        else:
            self.problem = problem
            if settings is not None:
                self.settings = settings

    def on_restore(self, experiment: Experiment) -> None:
        """Take back the memorized attributes after a restart: no announcement."""
        self.experiment = experiment

    def _publish(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.effects.append(PublishExperiment(experiment))

    # -- what the device shows -------------------------------------------------------

    @property
    def state_name(self) -> str:
        return str(self.current_state.name)

    def handle(self, event: str, /, **arguments: Any) -> list[Effect]:
        try:
            self.send(event, **arguments)
        except self.TransitionNotAllowed:
            raise Refused(why_not(self, event)) from None
        effects, self.effects = self.effects, []
        return effects

    def status(self) -> str:
        if self.current_state_value == "fault":
            return f"FAULT: {self.problem}. Fix it, then call Reset."
        experiment = self.experiment
        if not experiment.proposal:
            return "ON: no proposal; write proposal to start a session"
        return (
            f"ON: proposal {experiment.proposal}, sample {experiment.sample!r}, "
            f"data root {experiment.data_root}"
        )


def why_not(chart: MetaExperimentChart, event: str) -> str:
    if chart.current_state_value == "fault":
        return f"{event} is not allowed in FAULT ({chart.problem}); fix it, then call Reset"
    return f"{event} is not allowed in {chart.state_name}: Reset only leaves FAULT"
