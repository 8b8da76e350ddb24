"""Grid squares registered the way ESRF's cryo-EM pipeline registers them.

scipion-em-esrf's `MetadataManagerClient` talks to both devices through
`tango.client.Device` (attributes as Python attributes). Before a grid square it aborts a
dataset still RUNNING (`AbortDataSet`, its spelling: Tango command names ignore case),
writes proposal, dataRoot, sample and datasetName, reading each back after 0.1 s and
trying again up to five times; it starts the dataset only when both devices are ON. It
appends files as paths relative to the data root, ends with `endDataset` and reads
`messageList`.
"""

from __future__ import annotations

import pytest
import tango.client

from tests.e2e.conftest import Beamline

pytestmark = pytest.mark.slow

ROOT = "/data/visitor/mx2005/cm01/20171209/RAW_DATA/grid2"
FILES = ("Images-Disc1/GridSquare_1/Data/FoilHole_1.mrc", "process/FoilHole_1/run.log")


class CryoEM:
    """The pipeline's calls, in its order; every write read back as it does."""

    def __init__(self, beamline: Beamline) -> None:
        self.manager = tango.client.Device(beamline.trl("id00/metadata/test"))
        self.meta = tango.client.Device(beamline.trl("id00/metaexp/test"))
        self.tries: list[str] = []

    def set(self, device: tango.client.Device, name: str, value: str) -> None:
        setattr(device, name, value)
        self.tries.append(name)
        assert getattr(device, name) == value, f"{name} read back differs at the first try"

    def start(self, root: str, proposal: str, sample: str, dataset: str) -> None:
        if str(self.manager.state()) == "RUNNING":
            self.manager.AbortDataSet()
        self.set(self.meta, "proposal", proposal)
        self.set(self.meta, "dataRoot", root)
        self.set(self.meta, "sample", sample)
        self.set(self.manager, "datasetName", dataset)
        assert (str(self.manager.state()), str(self.meta.state())) == ("ON", "ON")
        self.manager.StartDataset()

    def append(self, path: str) -> None:
        self.set(self.manager, "lastDataFile", path)

    def end(self) -> None:
        self.manager.endDataset()


def test_grid_squares_are_registered_with_their_files(beamline: Beamline) -> None:
    client = CryoEM(beamline)
    mark = beamline.mark()
    for square in ("GridSquare_1", "GridSquare_2"):
        client.start(ROOT, "id310001", "sample1", square)
        for path in FILES:
            client.append(path)
        client.end()
        assert str(client.manager.state()) == "STANDBY"
    registered = beamline.datasets_since(mark)
    assert [(d.name, d.files, d.location) for d in registered] == [
        (square, FILES, ROOT) for square in ("GridSquare_1", "GridSquare_2")
    ]
    messages = list(client.manager.messageList)
    assert sum("stored for ICAT" in line for line in messages) >= 2, messages


def test_a_grid_square_left_running_is_aborted_before_the_next(beamline: Beamline) -> None:
    client = CryoEM(beamline)
    mark = beamline.mark()
    client.start(ROOT, "id310001", "sample1", "GridSquare_3")
    client.append(FILES[0])
    client.start(ROOT, "id310001", "sample1", "GridSquare_4")
    client.end()
    assert [(d.name, d.complete) for d in beamline.datasets_since(mark)] == [
        ("GridSquare_3", "false"),
        ("GridSquare_4", "true"),
    ]
