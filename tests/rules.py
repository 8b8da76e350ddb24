"""The beamline's moves as hypothesis rules, shared by the chart tests and the device tests.

`BeamlineRules` drives the pure model (`PureSession`) and checks the SPEC's invariants
after every step. A subclass that returns a subject from `make_subject` gets every step
replayed on it, and its outcome and observation must equal the model's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from icatcore.records import sample_specified
from tests.session_model import Observation, PureSession, Rejected

STATES = {"OFF", "STANDBY", "ON", "RUNNING", "FAULT"}

proposals = st.sampled_from(["", "hg123", "MX2024", "ih-ls3456", "bad/name", "x\x07y"])
samples = st.sampled_from(["", "please enter", "lysozyme", "sample_2", "tab\tbed"])
data_roots = st.sampled_from(["/data/visitor", "/data/id00/inhouse", "/tmp/t\x1b"])
dataset_names = st.sampled_from(["", "sample_0001", "scan 2", "a/b", "..", "ok\nno"])
files = st.sampled_from(["/data/visitor/f1.h5", "/data/visitor/f2.edf", "bad\x1b[0m"])
parameter_sets = st.sampled_from(
    [
        {"Sample_description": "crystal in loop"},
        {"InstrumentSlitPrimary_horizontal_gap": "0.5", "Sample_description": "b"},
        {"Sample_description": "x", "NotAnIcatName": "1"},
        {"Sample_notes": "ok\x00"},
    ]
)


class Subject(Protocol):
    def write_proposal(self, name: str) -> None: ...
    def write_sample(self, name: str) -> None: ...
    def write_data_root(self, path: str) -> None: ...
    def write_dataset_name(self, name: str) -> None: ...
    def start_dataset(self) -> None: ...
    def end_dataset(self) -> None: ...
    def abort_dataset(self) -> None: ...
    def set_parameters(self, text: str) -> None: ...
    def add_file(self, path: str) -> None: ...
    def observe(self) -> Observation: ...
    def registrations(self) -> int: ...


class BeamlineRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = PureSession()
        self.subject: Subject | None = self.make_subject()
        self.accepted_starts = 0

    def make_subject(self) -> Subject | None:
        return None

    def step(self, move: Callable[[Any], None]) -> bool:
        """Play one move on the model (and the subject): True when it was accepted."""
        before = self.model.observe()
        registered = len(self.model.registered)
        try:
            move(self.model)
            accepted = True
        except Rejected:
            accepted = False
            assert self.model.observe() == before, "a refused call changed the model"
            assert len(self.model.registered) == registered
        if self.subject is not None:
            try:
                move(self.subject)
                subject_accepted = True
            except Rejected as error:
                subject_accepted = False
                assert str(error), "a refusal must say why"
            assert subject_accepted == accepted, (
                f"model {'accepted' if accepted else 'refused'} but the device did not"
            )
            seen, expected = self.subject.observe(), self.model.observe()
            assert seen == expected, f"device shows {seen}, chart says {expected}"
            assert self.subject.registrations() == len(self.model.registered)
        return accepted

    @rule(name=proposals)
    def write_proposal(self, name: str) -> None:
        self.step(lambda s: s.write_proposal(name))

    @rule(name=samples)
    def write_sample(self, name: str) -> None:
        self.step(lambda s: s.write_sample(name))

    @rule(path=data_roots)
    def write_data_root(self, path: str) -> None:
        self.step(lambda s: s.write_data_root(path))

    @rule(name=dataset_names)
    def write_dataset_name(self, name: str) -> None:
        self.step(lambda s: s.write_dataset_name(name))

    @rule()
    def start_dataset(self) -> None:
        if self.step(lambda s: s.start_dataset()):
            self.accepted_starts += 1

    @rule()
    def end_dataset(self) -> None:
        self.step(lambda s: s.end_dataset())

    @rule()
    def abort_dataset(self) -> None:
        self.step(lambda s: s.abort_dataset())

    @rule(values=parameter_sets)
    def set_parameters(self, values: dict[str, str]) -> None:
        self.step(lambda s: s.set_parameters(json.dumps(values)))

    @rule(path=files)
    def add_file(self, path: str) -> None:
        self.step(lambda s: s.add_file(path))

    @precondition(lambda self: self.model.observe().state in ("OFF", "STANDBY"))
    @rule(name=st.sampled_from(["sample_0001", "sample_0002"]))
    def prepare_a_dataset(self, name: str) -> None:
        """What BLISS does before a scan, so that runs reach ON and RUNNING often."""
        if not self.model.observe().proposal:
            self.step(lambda s: s.write_proposal("hg123"))
        self.step(lambda s: s.write_sample("lysozyme"))
        self.step(lambda s: s.write_dataset_name(name))

    @precondition(lambda self: self.model.observe().state == "ON")
    @rule()
    def run_a_dataset(self) -> None:
        """The common path, so that long runs see many whole datasets."""
        assert self.step(lambda s: s.start_dataset())
        self.accepted_starts += 1
        assert self.step(lambda s: s.add_file("/data/visitor/scan.h5"))
        assert self.step(lambda s: s.end_dataset())

    @invariant()
    def state_is_one_of_five(self) -> None:
        assert self.model.observe().state in STATES

    @invariant()
    def running_means_everything_is_known(self) -> None:
        seen = self.model.observe()
        if seen.state == "RUNNING":
            assert seen.proposal and sample_specified(seen.sample) and seen.dataset_name

    @invariant()
    def every_start_registers_exactly_once(self) -> None:
        running = 1 if self.model.manager.dataset_started() else 0
        assert len(self.model.registered) + running == self.accepted_starts

    @invariant()
    def a_dataset_is_open_only_while_running(self) -> None:
        state = self.model.observe().state
        assert self.model.manager.dataset_started() == (state == "RUNNING") or state == "FAULT"

    @invariant()
    def registrations_name_a_real_dataset(self) -> None:
        for dataset in self.model.registered:
            assert dataset.proposal and dataset.name and sample_specified(dataset.sample)
            assert dataset.start < dataset.end
