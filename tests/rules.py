"""The beamline's moves as hypothesis rules, shared by the chart tests and the device tests.

`BeamlineRules` plays every move on three things and compares them after each step:

- `SpecOracle`, a few lines written from SPEC.md's MetadataManager tables (which state the
  facts give, which calls each state allows, what an accepted call changes). It does not
  import the charts, so it cannot agree with them by construction;
- the pure model (`PureSession`, the production charts wired as the devices wire them);
- the subject, when a subclass returns one from `make_subject` (the real devices).

A call the SPEC does not allow in the current state must be refused by the chart and by
the devices; a call it allows may be refused only for its input (ICAT_InvalidInput).
After every step the state, proposal, sample, dataRoot, datasetName, files and the
number of registrations must be what the oracle says, for the chart and for the devices,
and the devices must show what the chart shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from icat_servers.icatcore.records import sample_specified
from tests.session_model import Observation, PureSession, Rejected, Unreadable

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

UNSPECIFIED_SAMPLES = ("", "please enter")
"""SPEC: a sample is not specified when it is "" or "please enter"."""


@dataclass
class SpecOracle:
    """What the SPEC says the MetadataManager shows, from the facts the calls established.

    The facts: is the MetaExperiment linked, its proposal, sample and dataRoot, the
    datasetName, is a dataset running, is the device in FAULT; and what follows from them:
    the files of the running dataset and how many datasets were registered. Readings of
    the SPEC made here: writing the value an attribute already has is no change; a
    running dataset stays RUNNING while its MetaExperiment cannot be reached (nothing
    changed its proposal or sample) and while the device is in FAULT (Reset resumes it).
    """

    linked: bool = True
    proposal: str = ""
    sample: str = ""
    data_root: str = ""
    dataset_name: str = ""
    running: bool = False
    fault: bool = False
    files: list[str] = field(default_factory=list)
    registered: int = 0

    def state(self) -> str:
        """The SPEC's state table."""
        if self.fault:
            return "FAULT"  # the device cannot work
        if self.running:
            return "RUNNING"  # a dataset is running
        if not (self.linked and self.proposal):
            return "OFF"  # no proposal, or the MetaExperiment cannot be reached
        if self.sample in UNSPECIFIED_SAMPLES or not self.dataset_name:
            return "STANDBY"  # proposal known, sample or dataset name not specified
        return "ON"  # proposal, sample and dataset name known; no dataset running

    def allows(self, action: str) -> bool:
        """The SPEC's command and attribute tables: may this call be made now?"""
        state = self.state()
        if action in ("write_proposal", "write_sample", "write_data_root"):
            return self.linked  # the MetaExperiment answers (it is ON)
        if action == "write_dataset_name":
            return state in ("STANDBY", "ON") and self.sample not in UNSPECIFIED_SAMPLES
        if action == "start_dataset":
            return state == "ON"
        if action in ("end_dataset", "abort_dataset", "add_file"):
            return state == "RUNNING"
        if action == "set_parameters":
            return state not in ("OFF", "FAULT")
        if action == "reset":
            return state == "FAULT"
        return True  # what happens to the device rather than a client call

    def apply(self, action: str, *arguments: str) -> None:
        """What an accepted call changes."""
        value = arguments[0] if arguments else ""
        if action == "write_proposal":
            if not value:
                self._experiment("", "", "")
            elif value != self.proposal:
                self._experiment(value, "please enter", "/data/visitor")
        elif action == "write_sample":
            self._experiment(self.proposal, value, self.data_root)
        elif action == "write_data_root":
            self._experiment(self.proposal, self.sample, value)
        elif action == "write_dataset_name":
            self.dataset_name = value
        elif action == "start_dataset":
            self.running, self.files = True, []
        elif action in ("end_dataset", "abort_dataset"):
            self._register()
        elif action == "add_file":
            self.files.append(value)
        elif action == "lose_meta":
            self.linked = False
        elif action == "find_meta":
            self.linked = True
        elif action == "break_configuration":
            self.fault = True
        elif action == "reset":
            self.fault = bool(value)

    def _experiment(self, proposal: str, sample: str, data_root: str) -> None:
        """A proposal or sample change ends a running dataset (registered) and resets
        datasetName; a dataRoot change alone does neither."""
        if (proposal, sample) != (self.proposal, self.sample):
            if self.running:
                self._register()
            self.dataset_name = ""
        self.proposal, self.sample, self.data_root = proposal, sample, data_root

    def _register(self) -> None:
        """EndDataset: registered, then datasetName, parameters and files cleared."""
        self.running, self.files, self.dataset_name = False, [], ""
        self.registered += 1

    def check(self, seen: Observation, registrations: int, who: str) -> None:
        """`who` (the chart or the devices) shows what the SPEC says."""
        facts = (
            f"linked={self.linked} proposal={self.proposal!r} sample={self.sample!r} "
            f"datasetName={self.dataset_name!r} running={self.running} fault={self.fault}"
        )
        assert seen.state == self.state(), (
            f"{who} is {seen.state}; the SPEC's table says {self.state()} for {facts}"
        )
        shown = (seen.proposal, seen.sample, seen.data_root, seen.files)
        expected = (self.proposal, self.sample, self.data_root, tuple(self.files))
        assert shown == expected, f"{who} shows {shown}, the SPEC says {expected}"
        if self.linked and self.sample in UNSPECIFIED_SAMPLES:
            assert isinstance(seen.dataset_name, Unreadable), (
                f"{who}: datasetName readable ({seen.dataset_name!r}) with no sample specified"
            )
        elif self.linked:
            assert seen.dataset_name == self.dataset_name, (
                f"{who}: datasetName {seen.dataset_name!r}, the SPEC says {self.dataset_name!r}"
            )
        assert registrations == self.registered, (
            f"{who} registered {registrations} datasets, the SPEC {self.registered}"
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
    model_class: type[PureSession] = PureSession
    """The model played beside the oracle (a test of the oracle gives it a broken one)."""

    def __init__(self) -> None:
        super().__init__()
        self.oracle = SpecOracle()
        self.model = self.model_class()
        self.subject: Subject | None = self.make_subject()
        self.accepted_starts = 0

    def make_subject(self) -> Subject | None:
        return None

    def _play(self, on: object, action: str, arguments: tuple[str, ...]) -> Rejected | None:
        """One call on the model or the subject: None if accepted, else its refusal."""
        try:
            getattr(on, action)(*arguments)
        except Rejected as refusal:
            assert str(refusal), "a refusal must say why"
            return refusal
        return None

    def _judge(self, who: str, action: str, allowed: bool, refusal: Rejected | None) -> None:
        state = self.oracle.state()
        if not allowed:
            assert refusal is not None, f"the SPEC does not allow {action} in {state}; {who} did"
        elif refusal is not None:
            assert refusal.bad_input, (
                f"the SPEC allows {action} in {state}; {who} refused it: {refusal}"
            )

    def step(self, action: str, *arguments: str) -> bool:
        """Play one call on the oracle, the model (and the subject): True when accepted."""
        allowed = self.oracle.allows(action)
        before = self.model.observe()
        registered = len(self.model.registered)
        refusal = self._play(self.model, action, arguments)
        self._judge("the chart", action, allowed, refusal)
        if refusal is not None:
            assert self.model.observe() == before, "a refused call changed the model"
            assert len(self.model.registered) == registered
        else:
            self.oracle.apply(action, *arguments)
        self.oracle.check(self.model.observe(), len(self.model.registered), "the chart")
        if self.subject is not None:
            subject_refusal = self._play(self.subject, action, arguments)
            self._judge("the devices", action, allowed, subject_refusal)
            assert (subject_refusal is None) == (refusal is None), (
                f"the chart {'refused' if refusal else 'accepted'} {action}{arguments}, "
                f"the devices did not: {subject_refusal}"
            )
            seen, expected = self.subject.observe(), self.model.observe()
            self.oracle.check(seen, self.subject.registrations(), "the devices")
            assert seen == expected, f"device shows {seen}, chart says {expected}"
        return refusal is None

    @rule(name=proposals)
    def write_proposal(self, name: str) -> None:
        self.step("write_proposal", name)

    @rule(name=samples)
    def write_sample(self, name: str) -> None:
        self.step("write_sample", name)

    @rule(path=data_roots)
    def write_data_root(self, path: str) -> None:
        self.step("write_data_root", path)

    @rule(name=dataset_names)
    def write_dataset_name(self, name: str) -> None:
        self.step("write_dataset_name", name)

    @rule()
    def start_dataset(self) -> None:
        if self.step("start_dataset"):
            self.accepted_starts += 1

    @rule()
    def end_dataset(self) -> None:
        self.step("end_dataset")

    @rule()
    def abort_dataset(self) -> None:
        self.step("abort_dataset")

    @rule(values=parameter_sets)
    def set_parameters(self, values: dict[str, str]) -> None:
        self.step("set_parameters", json.dumps(values))

    @rule(path=files)
    def add_file(self, path: str) -> None:
        self.step("add_file", path)

    @precondition(lambda self: self.oracle.state() in ("OFF", "STANDBY"))
    @rule(name=st.sampled_from(["sample_0001", "sample_0002"]))
    def prepare_a_dataset(self, name: str) -> None:
        """What BLISS does before a scan, so that runs reach ON and RUNNING often."""
        if not self.oracle.proposal:
            self.step("write_proposal", "hg123")
        self.step("write_sample", "lysozyme")
        self.step("write_dataset_name", name)

    @precondition(lambda self: self.oracle.state() == "ON")
    @rule()
    def run_a_dataset(self) -> None:
        """The common path, so that long runs see many whole datasets."""
        assert self.step("start_dataset")
        self.accepted_starts += 1
        assert self.step("add_file", "/data/visitor/scan.h5")
        assert self.step("end_dataset")

    @invariant()
    def the_chart_shows_what_the_spec_says(self) -> None:
        """Also before the first call: a fresh device with no proposal is OFF."""
        self.oracle.check(self.model.observe(), len(self.model.registered), "the chart")

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
