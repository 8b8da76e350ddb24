"""The MetaExperiment: the proposal, sample and data root of one beamline session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statemachine import State, StateMachine

from icatcore import definitions
from icatcore.records import (
    DEFAULT_DATA_ROOT,
    SAMPLE_PLACEHOLDER,
    Experiment,
    InvestigationRecord,
)
from statecharts.effects import AnnounceInvestigation, Effect, PublishExperiment, Refused


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
    reset = fault.to.itself(internal=True, cond="still_broken") | fault.to(on)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.experiment = Experiment()
        self.problem = ""
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
        self._publish(Experiment(name, SAMPLE_PLACEHOLDER, DEFAULT_DATA_ROOT))
        self.effects.append(
            AnnounceInvestigation(InvestigationRecord(name, self.settings.beamline, at))
        )

    def close_proposal(self) -> None:
        self._publish(Experiment())

    def change_sample(self, name: str) -> None:
        self._publish(Experiment(self.experiment.proposal, name, self.experiment.data_root))

    def move_data_root(self, path: str) -> None:
        self._publish(Experiment(self.experiment.proposal, self.experiment.sample, path))

    def on_fail(self, problem: str) -> None:
        self.problem = problem

    def on_reset(self, problem: str = "") -> None:
        self.problem = problem

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

    def restore(self, experiment: Experiment) -> None:
        """Take back the memorized attributes after a restart: no announcement."""
        self.experiment = experiment

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
