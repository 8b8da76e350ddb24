"""kill -9 of either server in every state, restarts, and the start order.

What a restart must bring back (SPEC): the MetaExperiment's memorized proposal, sample and
dataRoot; the MetadataManager's memorized datasetName; the manager's state recomputed from
them. A RUNNING dataset must survive too: it is a registration the servers promised (SPEC:
restarts lose nothing); after the restart it is RUNNING again and EndDataset registers it
with what it held before the kill. The order the servers start in must not matter.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
import tango

from tests.e2e.conftest import META, OFF, ON, RUNNING, STANDBY, Beamline, Dataset, wait_for

pytestmark = pytest.mark.slow

PROPOSAL, SAMPLE, ROOT, DATASET = "hg500", "s0", "/data/visitor/hg500/id00/s0", "d0"
FIRST_FILE = f"{ROOT}/d0/scan0001.h5"


def arrange(beamline: Beamline, state: tango.DevState) -> dict[str, str | None]:
    """Reach `state` the way sessions do; return what the manager must show afterwards."""
    beamline.open_session(PROPOSAL, SAMPLE, ROOT)
    beamline.manager.write_attribute("datasetName", DATASET)
    expected: dict[str, str | None] = {
        "proposal": PROPOSAL,
        "sample": SAMPLE,
        "dataRoot": ROOT,
        "datasetName": DATASET,
    }
    if state == OFF:  # the session closed
        beamline.meta.write_attribute("proposal", "")
        expected = {"proposal": "", "sample": "", "dataRoot": "", "datasetName": None}
    elif state == STANDBY:  # a new sample, not yet a dataset name: the old name is gone
        beamline.meta.write_attribute("sample", "s1")
        expected.update(sample="s1", datasetName="")
    elif state == RUNNING:
        beamline.manager.command_inout("StartDataset")
        beamline.manager.command_inout("SetParameters", json.dumps({"Sample_notes": "kept"}))
        beamline.manager.write_attribute("lastDataFile", FIRST_FILE)
    assert beamline.manager.state() == state
    return expected


def observed(beamline: Beamline) -> dict[str, str | None]:
    meta = {
        a.name: a.value for a in beamline.meta.read_attributes(["proposal", "sample", "dataRoot"])
    }
    manager = {
        a.name: a.value
        for a in beamline.manager.read_attributes(["proposal", "sampleName", "datasetName"])
    }
    assert (manager["proposal"], manager["sampleName"]) == (meta["proposal"], meta["sample"])
    return {**meta, "datasetName": manager["datasetName"]}


def settled(beamline: Beamline, state: tango.DevState) -> None:
    """The state a restart leads to is reached without a call, then it stays."""
    wait_for(lambda: beamline.manager.state() == state, 15.0, f"manager {state}", beamline.describe)
    time.sleep(1.2)  # two more polls of the MetaExperiment: nothing changes back
    assert beamline.manager.state() == state, beamline.manager.status()


STATES = [OFF, STANDBY, ON, RUNNING]


def end_the_kept_dataset(beamline: Beamline, mark: int, files: tuple[str, ...]) -> Dataset:
    """EndDataset after a restart registers the dataset that ran before it, whole."""
    beamline.manager.command_inout("EndDataset")
    [dataset] = beamline.datasets_since(mark)
    assert dataset.name == DATASET
    assert dataset.files == files
    assert dataset.parameters["Sample_notes"] == "kept"
    return dataset


@pytest.mark.parametrize("state", STATES, ids=str)
def test_kill_the_metadata_manager(beamline: Beamline, state: tango.DevState) -> None:
    expected = arrange(beamline, state)
    mark = beamline.mark()
    killed_at = datetime.now(UTC)
    beamline.manager_server.kill()
    beamline.manager_server.start()
    settled(beamline, state)
    assert observed(beamline) == expected
    beamline.wait_linked()
    if state == RUNNING:
        dataset = end_the_kept_dataset(beamline, mark, (FIRST_FILE,))
        assert datetime.fromisoformat(dataset.start) < killed_at, "the start time it had"


@pytest.mark.parametrize("state", STATES, ids=str)
def test_kill_the_meta_experiment(beamline: Beamline, state: tango.DevState) -> None:
    expected = arrange(beamline, state)
    mark = beamline.mark()
    beamline.meta_server.kill()
    # the manager notices by itself: OFF naming the MetaExperiment; a running dataset is
    # kept (it still takes files), its Status does not change, so give it two polls
    if state == RUNNING:
        time.sleep(1.2)
        assert beamline.manager.state() == RUNNING, beamline.manager.status()
    else:
        wait_for(
            lambda: "cannot be reached" in beamline.manager.status(),
            10.0,
            "the manager notices",
            beamline.describe,
        )
        assert beamline.manager.state() == OFF, beamline.manager.status()
        assert META in beamline.manager.status()
    later_file = f"{ROOT}/d0/scan0002.h5"
    if state == RUNNING:
        beamline.manager.write_attribute("lastDataFile", later_file)
    beamline.meta_server.start()
    settled(beamline, state)
    assert observed(beamline) == expected
    beamline.wait_linked()
    # the restarted MetaExperiment is followed: a write reaches the manager before it returns
    if state == RUNNING:
        end_the_kept_dataset(beamline, mark, (FIRST_FILE, later_file))
    beamline.meta.write_attribute("proposal", "hg501")
    assert beamline.manager.state() == STANDBY
    assert beamline.manager.proposal == "hg501"


def test_manager_started_first_waits_for_the_meta_experiment(beamline: Beamline) -> None:
    arrange(beamline, ON)
    beamline.manager_server.kill()
    beamline.meta_server.kill()
    beamline.manager_server.start()
    assert beamline.manager.state() == OFF
    status = beamline.manager.status()
    assert META in status and "cannot be reached" in status, status
    time.sleep(1.0)  # it keeps trying, and stays OFF meanwhile
    assert beamline.manager.state() == OFF
    beamline.meta_server.start()
    settled(beamline, ON)
    assert observed(beamline) == {
        "proposal": PROPOSAL,
        "sample": SAMPLE,
        "dataRoot": ROOT,
        "datasetName": DATASET,
    }
    beamline.wait_linked()
    beamline.meta.write_attribute("sample", "s2")
    assert beamline.manager.state() == STANDBY
