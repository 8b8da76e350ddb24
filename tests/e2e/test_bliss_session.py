"""A beamline session driven the way BLISS's `IcatTangoProxy` (BLISS 1.x) drives the servers.

`Bliss` below makes the calls `IcatTangoProxy.store_dataset` makes, in its order and with
its spelling (`startDataset`, `endDataset`, attribute writes by name), but where BLISS
polls for a state the test asserts it at once: the SPEC says the state a call causes is
there when the call returns. Every starting state of the MetadataManager is combined with
a proposal, sample and dataset that are the same as, or differ from, what the servers hold.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import tango

from icat_servers.icatcore.outbox import Channel, Kind
from tests.e2e.conftest import (
    BEAMLINE,
    MANAGER,
    OFF,
    ON,
    RUNNING,
    STANDBY,
    Beamline,
    Dataset,
)

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` skips them

METADATA = {
    "Sample_description": "lysozyme crystals, 2 mm",
    "InstrumentSlitPrimary_horizontal_gap": "0.25",
    "InstrumentMonochromator_energy": 12.4,
}
"""What BLISS sends with SetParameters (a json.dumps of a dict); one value is a number."""


def dataset_path(proposal: str, sample: str, dataset: str) -> str:
    """BLISS's dataset directory, which it writes as dataRoot."""
    return f"/data/visitor/{proposal}/{BEAMLINE}/20261126/RAW_DATA/{sample}/{sample}_{dataset}"


class Bliss:
    """IcatTangoProxy's calls, each followed by the state it must leave."""

    def __init__(self, beamline: Beamline) -> None:
        self.meta = beamline.meta
        self.manager = beamline.manager
        self.calls: list[str] = []

    def state(self) -> tango.DevState:
        return self.manager.command_inout("State")

    def call(self, what: str, action: Callable[[], object], expected: tango.DevState) -> None:
        action()
        self.calls.append(what)
        state = self.state()
        assert state == expected, (
            f"after {what}: {state}, expected {expected}; Status: {self.manager.status()}"
        )

    def read(self, proxy: tango.DeviceProxy, name: str) -> Any:
        return getattr(proxy, name)

    def write(self, proxy: tango.DeviceProxy, name: str, value: str) -> None:
        setattr(proxy, name, value)

    # -- IcatTangoProxy ---------------------------------------------------------------

    def check_properties(self) -> None:
        """BLISS reads these and writes them when they differ: the registration has them."""
        assert self.meta.get_property("beamlineID")["beamlineID"][0] == BEAMLINE
        pattern = self.manager.get_property("dataFolderPattern")["dataFolderPattern"]
        assert pattern[0] == "{dataRoot}"

    def ensure_notrunning(self) -> None:
        if self.state() == RUNNING:
            self.call("endDataset", self.manager.endDataset, STANDBY)

    def ensure_running(self) -> None:
        if self.state() != RUNNING:
            self.call("startDataset", self.manager.startDataset, RUNNING)

    def start_dataset(self, proposal: str, collection: str, dataset: str, path: str) -> None:
        self.check_properties()
        if proposal != self.read(self.meta, "proposal"):
            self.ensure_notrunning()
            self.call("proposal", lambda: self.write(self.meta, "proposal", proposal), STANDBY)
            assert self.read(self.meta, "sample") == "please enter"
            assert self.read(self.meta, "dataRoot") == "/data/visitor"
            with pytest.raises(tango.DevFailed, match="sample is not specified"):
                self.read(self.manager, "datasetName")  # SPEC: only once a sample is specified
        if collection != self.read(self.meta, "sample"):
            self.ensure_notrunning()
            self.call("sample", lambda: self.write(self.meta, "sample", collection), STANDBY)
            assert self.read(self.manager, "datasetName") == ""
        if dataset != self.read(self.manager, "datasetName"):
            self.ensure_notrunning()
            self.call("datasetName", lambda: self.write(self.manager, "datasetName", dataset), ON)
        if path != self.read(self.meta, "dataRoot"):
            before = self.state()
            self.call("dataRoot", lambda: self.write(self.meta, "dataRoot", path), before)
        self.ensure_running()

    def store_dataset(
        self, proposal: str, collection: str, dataset: str, path: str, metadata: dict[str, Any]
    ) -> None:
        self.start_dataset(proposal, collection, dataset, path)
        self.call(
            "SetParameters",
            lambda: self.manager.SetParameters(json.dumps(metadata)),
            RUNNING,
        )
        self.ensure_notrunning()

    def send_message(self, msg: str, msg_type: str) -> None:
        """BLISS encodes e-logbook text to latin-1 bytes (its pytango issue #72 workaround)."""
        command = {
            "command": "notifyCommand",
            "comment": "userComment",
            "error": "notifyError",
            "info": "notifyInfo",
            "debug": "notifyDebug",
        }[msg_type]
        self.manager.command_inout(command, msg.encode("latin-1", errors="replace"))

    def send_data(self, data: bytes, mimetype: str) -> None:
        url = f"data:{mimetype};base64," + base64.b64encode(data).decode("latin-1")
        self.manager.command_inout("uploadBase64", url)


# -- where the servers are before BLISS starts ----------------------------------------

PROPOSAL, SAMPLE, DATASET = "hg100", "s0", "d0"
EARLIER_FILE = f"{dataset_path(PROPOSAL, SAMPLE, DATASET)}/scan0001/eiger_0000.h5"


def arrange(beamline: Beamline, state: tango.DevState) -> None:
    """Bring the servers to `state` with proposal hg100, sample s0 and dataset d0."""
    if state == OFF:
        return
    beamline.open_session(PROPOSAL, SAMPLE, dataset_path(PROPOSAL, SAMPLE, DATASET))
    if state == STANDBY:
        return
    beamline.manager.write_attribute("datasetName", DATASET)
    if state == ON:
        return
    beamline.manager.command_inout("StartDataset")
    beamline.manager.command_inout("SetParameters", json.dumps({"Sample_notes": "earlier"}))
    beamline.manager.write_attribute("lastDataFile", EARLIER_FILE)


@dataclass(frozen=True)
class Case:
    state: tango.DevState
    same_proposal: bool
    same_sample: bool
    same_dataset: bool

    @property
    def id(self) -> str:
        same = [
            name
            for name, flag in (
                ("proposal", self.same_proposal),
                ("sample", self.same_sample),
                ("dataset", self.same_dataset),
            )
            if flag
        ]
        return f"{self.state}-same_{'_'.join(same) or 'nothing'}"

    def target(self) -> tuple[str, str, str]:
        return (
            PROPOSAL if self.same_proposal else "hg200",
            SAMPLE if self.same_sample else "s1",
            DATASET if self.same_dataset else "d1",
        )

    def expected_calls(self) -> list[str]:
        """What IcatTangoProxy writes and calls, given what it reads back."""
        calls = []
        if self.state == RUNNING and not self.continues_running_dataset:
            calls.append("endDataset")
        new_proposal = self.state == OFF or not self.same_proposal
        if new_proposal:
            calls.append("proposal")
        new_sample = new_proposal or not self.same_sample
        if new_sample:
            calls.append("sample")
        if new_sample or self.state == STANDBY or not self.same_dataset:
            calls.append("datasetName")
        if new_sample or not self.same_dataset:
            calls.append("dataRoot")
        if not self.continues_running_dataset:
            calls.append("startDataset")
        return [*calls, "SetParameters", "endDataset"]

    @property
    def continues_running_dataset(self) -> bool:
        return (
            self.state == RUNNING and self.same_proposal and self.same_sample and self.same_dataset
        )


def cases() -> list[Case]:
    """Only what can be: in OFF nothing is set; in STANDBY no dataset is named."""
    found = [Case(OFF, False, False, False)]
    for proposal in (True, False):
        for sample in (True, False):
            found.append(Case(STANDBY, proposal, sample, False))
            for dataset in (True, False):
                found.extend(Case(state, proposal, sample, dataset) for state in (ON, RUNNING))
    return found


CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_store_dataset_as_bliss_does(beamline: Beamline, case: Case) -> None:
    arrange(beamline, case.state)
    assert beamline.manager.state() == case.state
    mark = beamline.mark()
    proposal, sample, dataset = case.target()
    path = dataset_path(proposal, sample, dataset)
    bliss = Bliss(beamline)

    bliss.store_dataset(proposal, sample, dataset, path, METADATA)

    registered = beamline.datasets_since(mark)
    ended_first = case.state == RUNNING and not case.continues_running_dataset
    assert bliss.calls == case.expected_calls()
    assert len(registered) == (2 if ended_first else 1), registered
    if ended_first:
        check_earlier_dataset(registered[0])
    last = registered[-1]
    assert (last.proposal, last.sample, last.name) == (proposal, sample, dataset)
    assert last.beamline == BEAMLINE
    assert last.complete == "true"
    assert last.location == path
    for name, value in METADATA.items():
        assert last.parameters[name] == str(value), name
    if case.continues_running_dataset:
        assert last.parameters["Sample_notes"] == "earlier"
        assert last.files == (EARLIER_FILE,)
    else:
        assert "Sample_notes" not in last.parameters
        assert last.files == ()
    assert last.start <= last.end
    # what BLISS finds afterwards
    assert beamline.manager.state() == STANDBY
    assert beamline.manager.datasetName == ""
    assert (beamline.meta.proposal, beamline.meta.sample) == (proposal, sample)
    assert beamline.manager.read_attribute("datafileList").value in (None, [], ())
    assert all(beamline.manager.read_attribute(name).value == "" for name in METADATA)


def check_earlier_dataset(earlier: Dataset) -> None:
    """The dataset that was RUNNING when BLISS came: ended and registered, not dropped."""
    assert (earlier.proposal, earlier.sample, earlier.name) == (PROPOSAL, SAMPLE, DATASET)
    assert earlier.complete == "true"
    assert earlier.location == dataset_path(PROPOSAL, SAMPLE, DATASET)
    assert earlier.parameters["Sample_notes"] == "earlier"
    assert earlier.files == (EARLIER_FILE,)
    assert not set(METADATA) & set(earlier.parameters)


def test_a_second_dataset_of_the_same_sample_needs_only_its_name(beamline: Beamline) -> None:
    bliss = Bliss(beamline)
    mark = beamline.mark()
    for number in range(1, 4):
        name = f"{number:04d}"
        bliss.calls.clear()
        bliss.store_dataset("hg300", "lysozyme", name, dataset_path("hg300", "lysozyme", name), {})
        if number > 1:
            assert bliss.calls == [
                "datasetName",
                "dataRoot",
                "startDataset",
                "SetParameters",
                "endDataset",
            ]
    registered = beamline.datasets_since(mark)
    assert [d.name for d in registered] == ["0001", "0002", "0003"]
    assert {d.sample for d in registered} == {"lysozyme"}
    assert [d.start for d in registered] == sorted(d.start for d in registered)


@pytest.mark.parametrize("change", ["proposal", "sample"])
def test_a_change_while_running_ends_the_dataset_on_the_server(
    beamline: Beamline, change: str
) -> None:
    """A client that does not end first (unlike BLISS): the servers end and register it."""
    arrange(beamline, RUNNING)
    mark = beamline.mark()
    beamline.meta.write_attribute(change, "other")
    assert beamline.manager.state() == STANDBY
    [earlier] = beamline.datasets_since(mark)
    check_earlier_dataset(earlier)
    if change == "sample":
        assert beamline.manager.datasetName == ""
    else:  # a new proposal has no sample yet
        with pytest.raises(tango.DevFailed, match="sample is not specified"):
            beamline.manager.datasetName  # noqa: B018


def test_elogbook_messages_and_images_as_bliss_sends_them(beamline: Beamline) -> None:
    bliss = Bliss(beamline)
    bliss.start_dataset("hg400", "sample", "0001", dataset_path("hg400", "sample", "0001"))
    mark = beamline.mark()
    bliss.send_message("Energy set to 12.4 keV, T = 100 °C, café", "info")
    bliss.send_message("umv(sy, 1)", "command")
    bliss.send_message("beam lost", "error")
    bliss.send_message("looks good", "comment")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    bliss.send_data(png, "image/png")
    assert beamline.manager.state() == RUNNING
    notes = beamline.messages_since(mark, Channel.ICATPLUS)
    assert [m.kind for m in notes] == [Kind.NOTIFICATION] * 4 + [Kind.IMAGE]
    bodies = [json.loads(m.body) for m in notes]
    assert [b.get("category") for b in bodies[:4]] == ["info", "commandline", "error", "comment"]
    assert bodies[0]["content"][0]["text"] == "Energy set to 12.4 keV, T = 100 °C, café"
    assert {b["datasetName"] for b in bodies[:4]} == {"0001"}
    assert bodies[4]["base64"] == "data:image/png;base64," + base64.b64encode(png).decode()
    for message in notes:
        assert dict(message.query) == {"investigationName": "hg400", "instrumentName": BEAMLINE}
    bliss.ensure_notrunning()


def test_every_write_is_seen_at_once_while_the_manager_works_in_the_background(
    beamline: Beamline,
) -> None:
    """The manager polls its MetaExperiment and refreshes its Status from threads of its
    own, and a GUI watches it; a client's write must still reach it before the write
    returns, and quickly."""
    beamline.open_session()
    mark = beamline.mark()
    beamline.manager.write_attribute("datasetName", "waiting")
    beamline.manager.command_inout("StartDataset")
    beamline.manager.command_inout("EndDataset")
    assert len(beamline.datasets_since(mark)) == 1  # it waits: Status changes every second
    watcher = tango.DeviceProxy(beamline.trl(MANAGER))
    subscriptions = [
        watcher.subscribe_event(
            name, tango.EventType.CHANGE_EVENT, tango.utils.EventCallback(fd=io.StringIO())
        )
        for name in ("State", "Status", "undeliveredCount", "sampleName")
    ]
    slowest = 0.0
    count = 0
    deadline = time.monotonic() + 4.0
    try:
        while time.monotonic() < deadline:
            count += 1
            started = time.monotonic()
            beamline.meta.write_attribute("sample", f"sample{count}")
            assert beamline.manager.read_attribute("sampleName").value == f"sample{count}"
            assert beamline.manager.state() == STANDBY
            beamline.manager.write_attribute("datasetName", f"d{count}")
            assert beamline.manager.state() == ON
            slowest = max(slowest, time.monotonic() - started)
    finally:
        for subscription in subscriptions:
            watcher.unsubscribe_event(subscription)
    assert slowest < 1.0, f"a write took {slowest:.1f} s"
