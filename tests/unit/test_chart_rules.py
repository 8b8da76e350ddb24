"""Random beamline sessions against the pure charts, checking the SPEC's invariants."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from tests.disruptions import DisruptedRules
from tests.rules import BeamlineRules


class ChartRules(BeamlineRules):
    """The device rules plus what only the pure chart can be made to do on demand."""

    @precondition(lambda self: self.model.meta_reachable)
    @rule()
    def lose_meta_experiment(self) -> None:
        self.step(lambda s: s.lose_meta())

    @precondition(lambda self: not self.model.meta_reachable)
    @rule()
    def find_meta_experiment(self) -> None:
        self.step(lambda s: s.find_meta())

    @precondition(lambda self: self.model.observe().state != "FAULT")
    @rule(problem=st.sampled_from(["beamlineID is missing", "outbox unwritable"]))
    def break_configuration(self, problem: str) -> None:
        self.step(lambda s: s.break_configuration(problem))

    @precondition(lambda self: self.model.observe().state == "FAULT")
    @rule(problem=st.sampled_from(["", "", "beamlineID is missing"]))
    def reset(self, problem: str) -> None:
        self.step(lambda s: s.reset(problem))


ChartRules.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_random_sessions_keep_the_spec_invariants = ChartRules.TestCase


class ChartDisruptedRules(DisruptedRules):
    """The same rules with restarts of the MetadataManager chart from its journal."""


ChartDisruptedRules.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestChartDisruptedRules = ChartDisruptedRules.TestCase
