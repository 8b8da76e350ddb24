"""Data collections driven the way MXCuBE's `MXCuBEMetadataClient` drives the servers.

MXCuBE (mxcubecore `ESRFMetadataManagerClient`) writes proposal, dataRoot, sample and
`scanName` before every collection, calls `StartScan` when both devices are ON, appends
every image with `lastDataFile`, sets the technique parameters as attributes (one per
name in the `parameters` property), then calls `endScan` (its spelling).
"""

from __future__ import annotations

import pytest
import tango

from tests.e2e.conftest import BEAMLINE, ON, RUNNING, STANDBY, Beamline

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` skips them

PROPOSAL = "mx2345"
TECHNIQUE_VALUES = {
    "InstrumentSlitPrimary_horizontal_gap": "0.05",
    "InstrumentSlitPrimary_vertical_gap": "0.02",
    "InstrumentMonochromator_energy": "12.7",
    "Sample_description": "thaumatin, cryo-cooled",
}


class MXCuBE:
    def __init__(self, beamline: Beamline) -> None:
        self.meta = beamline.meta
        self.manager = beamline.manager

    def start(self, directory: str, proposal: str, sample: str, dataset: str) -> None:
        """MetadataManagerClient.start, preceded by MXCuBEMetadataClient's RUNNING check."""
        if str(self.manager.state()) == "RUNNING":
            self.manager.endScan()
            assert self.manager.state() == STANDBY
        self.meta.proposal = proposal
        assert self.manager.state() in (STANDBY, ON)
        self.meta.dataRoot = directory
        self.meta.sample = sample
        assert self.manager.state() == STANDBY  # a sample write clears the dataset name
        self.manager.scanName = dataset
        assert self.manager.state() == ON
        if str(self.meta.state()) == "ON" and str(self.manager.state()) == "ON":
            self.manager.StartScan()
        assert self.manager.state() == RUNNING

    def append_file(self, path: str) -> None:
        self.manager.lastDataFile = path
        assert self.manager.state() == RUNNING

    def end(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            setattr(self.manager, name, str(value))
            assert self.manager.state() == RUNNING
        self.manager.endScan()
        assert self.manager.state() == STANDBY


def images(directory: str, prefix: str, run: int, count: int) -> list[str]:
    return [f"{directory}/{prefix}_{run}_{number:04d}.cbf" for number in range(1, count + 1)]


def test_a_collection_as_mxcube_makes_it(beamline: Beamline) -> None:
    mxcube = MXCuBE(beamline)
    directory = f"/data/visitor/{PROPOSAL}/{BEAMLINE}/20261126/RAW_DATA/thau/thau-x1"
    dataset = "thau-x1_1_4711"
    mark = beamline.mark()
    undelivered = beamline.manager.undeliveredCount  # nothing leaves: the broker is nowhere

    mxcube.start(directory, PROPOSAL, "thau", dataset)
    assert beamline.manager.scanName == dataset
    assert beamline.manager.datasetName == dataset
    assert beamline.manager.dataFolder == directory
    files = images(directory, "thau-x1", 1, 5)
    files += [f"{directory}/{PROPOSAL}-{BEAMLINE}-thau-x1_1_4711.h5"]
    for number, path in enumerate(files, start=1):
        mxcube.append_file(path)
        assert beamline.manager.lastDataFile == path
        assert list(beamline.manager.datafileList) == files[:number]
    for name, value in TECHNIQUE_VALUES.items():
        setattr(beamline.manager, name, value)
        assert beamline.manager.read_attribute(name).value == value
    mxcube.end(TECHNIQUE_VALUES)

    [registered] = beamline.datasets_since(mark)
    assert beamline.manager.undeliveredCount == undelivered + 1
    assert (registered.proposal, registered.sample, registered.name) == (
        PROPOSAL,
        "thau",
        dataset,
    )
    assert registered.complete == "true"
    assert registered.location == directory
    assert registered.files == tuple(files)
    for name, value in TECHNIQUE_VALUES.items():
        assert registered.parameters[name] == value, name
    # the next collection starts clean
    assert beamline.manager.datafileList in (None, [], ())
    assert all(beamline.manager.read_attribute(name).value == "" for name in TECHNIQUE_VALUES)
    assert beamline.manager.scanName == ""


def test_collections_in_a_row_and_one_left_running(beamline: Beamline) -> None:
    """MXCuBE rewrites proposal and sample before each collection (the same ones), and
    ends a collection a crash left RUNNING before it starts the next."""
    mxcube = MXCuBE(beamline)
    mark = beamline.mark()
    names = []
    for run in (1, 2, 3):
        directory = f"/data/visitor/{PROPOSAL}/{BEAMLINE}/20261126/RAW_DATA/lyso/run{run}"
        name = f"lyso_{run}_{100 + run}"
        names.append(name)
        mxcube.start(directory, PROPOSAL, "lyso", name)
        for path in images(directory, "lyso", run, 2):
            mxcube.append_file(path)
        if run == 2:
            continue  # MXCuBE crashed: the next start ends this one
        mxcube.end({"InstrumentMonochromator_energy": f"1{run}.5"})
    registered = beamline.datasets_since(mark)
    assert [d.name for d in registered] == names
    assert all(d.complete == "true" for d in registered)
    assert [len(d.files) for d in registered] == [2, 2, 2]
    assert "InstrumentMonochromator_energy" not in registered[1].parameters
    assert registered[2].parameters["InstrumentMonochromator_energy"] == "13.5"
    assert registered[2].location.endswith("/run3")


def test_technique_parameters_are_attributes_from_the_parameters_property(
    beamline: Beamline,
) -> None:
    attributes = set(beamline.manager.get_attribute_list())
    assert set(TECHNIQUE_VALUES) <= attributes
    assert "Sample_notes" in attributes
    assert "MX_beamShape" not in attributes  # not in this technique's `parameters`
    with pytest.raises(tango.DevFailed, match="MX_beamShape"):
        beamline.manager.read_attribute("MX_beamShape")
