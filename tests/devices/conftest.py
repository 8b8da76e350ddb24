"""One MetaExperiment and one MetadataManager, real processes on a real Tango database.

The devices carry the names the pure model uses (tests/session_model.py), so that what
they say (a refusal, an unreadable datasetName) can be compared with the model word for word.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.beamline import Beamline, Beamlines
from tests.session_model import BEAMLINE, META, PATTERN

__all__ = ["MANAGER", "META", "TECHNIQUE", "Beamline"]

MANAGER = "id00/metadata/dev"
TECHNIQUE = ("Sample_description", "InstrumentSlitPrimary_horizontal_gap")


@pytest.fixture(scope="package")
def beamline(beamlines: Beamlines) -> Iterator[Beamline]:
    line = beamlines.make(
        "devtest",
        beamline_id=BEAMLINE,
        meta_name=META,
        manager_name=MANAGER,
        parameters=TECHNIQUE,
        pattern=PATTERN,
        start=False,
    )
    try:
        line.manager_server.start()  # the manager first: the order must not matter (SPEC)
        line.meta_server.start()
        line.wait_linked()
        yield line
    finally:
        line.stop()
