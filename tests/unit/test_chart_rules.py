"""Random beamline sessions against the pure charts, checking the SPEC's invariants."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from tests.disruptions import DisruptedRules
from tests.rules import BeamlineRules
from tests.session_model import PureSession


class ChartRules(BeamlineRules):
    """The device rules plus what only the pure chart can be made to do on demand."""

    @precondition(lambda self: self.oracle.linked)
    @rule()
    def lose_meta_experiment(self) -> None:
        self.step("lose_meta")

    @precondition(lambda self: not self.oracle.linked)
    @rule()
    def find_meta_experiment(self) -> None:
        self.step("find_meta")

    @precondition(lambda self: self.oracle.state() != "FAULT")
    @rule(problem=st.sampled_from(["beamlineID is missing", "outbox unwritable"]))
    def break_configuration(self, problem: str) -> None:
        self.step("break_configuration", problem)

    @precondition(lambda self: self.oracle.state() == "FAULT")
    @rule(problem=st.sampled_from(["", "", "beamlineID is missing"]))
    def reset(self, problem: str) -> None:
        self.step("reset", problem)


ChartRules.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_random_sessions_keep_the_spec_invariants = ChartRules.TestCase


class ChartDisruptedRules(DisruptedRules):
    """The same rules with restarts of the MetadataManager chart from its journal."""


ChartDisruptedRules.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestChartDisruptedRules = ChartDisruptedRules.TestCase


# -- the oracle fails on a chart that breaks the SPEC -------------------------------------
#
# Charts with a bug the comparison of device and chart cannot see (both would have it) and
# no other invariant notices: the oracle must. Each is played the one path that shows it.


class KeepsTheNameAcrossASampleChange(PureSession):
    """The SPEC: writing sample resets the datasetName of every follower."""

    def write_sample(self, name: str) -> None:
        kept = self.manager.dataset_name
        super().write_sample(name)
        if kept and self.manager.state_name == "STANDBY" and self.manager.sample_known():
            self.write_dataset_name(kept)


class StartsWithoutAName(PureSession):
    """The SPEC: StartDataset goes from ON only (a dataset has a name)."""

    def start_dataset(self) -> None:
        if self.manager.state_name == "STANDBY" and self.manager.sample_known():
            self.manager.dataset_name = "unnamed"
            self.manager.follow_facts()
        super().start_dataset()


class EndsTheDatasetOnADataRootChange(PureSession):
    """The SPEC: only a proposal or sample change ends a running dataset."""

    def write_data_root(self, path: str) -> None:
        if self.manager.dataset_started() and path != self.meta.experiment.data_root:
            self.end_dataset()
        super().write_data_root(path)


def rules_on(broken: type[PureSession]) -> ChartRules:
    class BrokenRules(ChartRules):
        model_class = broken

    return BrokenRules()


def test_the_oracle_fails_a_chart_that_keeps_the_name_across_a_sample_change() -> None:
    rules = rules_on(KeepsTheNameAcrossASampleChange)
    rules.prepare_a_dataset("sample_0001")
    with pytest.raises(AssertionError, match="the chart is ON; the SPEC's table says STANDBY"):
        rules.write_sample("sample_2")


def test_the_oracle_fails_a_chart_that_ends_the_dataset_on_a_data_root_change() -> None:
    rules = rules_on(EndsTheDatasetOnADataRootChange)
    rules.prepare_a_dataset("sample_0001")
    rules.start_dataset()
    with pytest.raises(AssertionError, match="the chart is STANDBY; the SPEC's table says RUN"):
        rules.write_data_root("/data/id00/inhouse")


def test_the_oracle_fails_a_chart_that_starts_a_dataset_without_a_name() -> None:
    rules = rules_on(StartsWithoutAName)
    rules.write_proposal("hg123")
    rules.write_sample("lysozyme")
    with pytest.raises(AssertionError, match="the SPEC does not allow start_dataset in STANDBY"):
        rules.start_dataset()
