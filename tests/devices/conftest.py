"""One MetaExperiment and one MetadataManager, real processes on a real Tango database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services.servers import Server, register
from tests.session_model import BEAMLINE, META, PATTERN

__all__ = ["MANAGER", "META", "TECHNIQUE", "Beamline"]

MANAGER = "id00/metadata/dev"
TECHNIQUE = ["Sample_description", "InstrumentSlitPrimary_horizontal_gap"]


@dataclass
class Beamline:
    meta: Server
    manager: Server
    outbox: Path


@pytest.fixture(scope="session")
def beamline(tango_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Beamline]:
    state = tmp_path_factory.mktemp("state")
    register(
        tango_db, "MetaExperiment/devtest", "MetaExperiment", {META: {"beamlineID": [BEAMLINE]}}
    )
    register(
        tango_db,
        "MetadataManager/devtest",
        "MetadataManager",
        {
            MANAGER: {
                "beamlineID": [BEAMLINE],
                "metaExperimentDevice": [META],
                "dataFolderPattern": [PATTERN],
                "parameters": TECHNIQUE,
            }
        },
    )
    environment = {"ICAT_SERVERS_STATE": str(state)}
    meta = Server("MetaExperiment", "devtest", tango_db, state / "meta.log", [META], environment)
    manager = Server(
        "MetadataManager", "devtest", tango_db, state / "manager.log", [MANAGER], environment
    )
    try:
        manager.start()
        meta.start()
        yield Beamline(meta, manager, state / "outbox" / MANAGER.replace("/", "_"))
    finally:
        manager.kill()
        meta.kill()
