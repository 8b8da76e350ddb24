"""The facts a beamline session produces: what the charts hand to the documents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

ParameterValue = str | int | float | bool | Sequence[str | int | float | bool]
"""A metadata value as clients give it: Tango attributes give text, JSON may give numbers."""

UNSPECIFIED_SAMPLES = frozenset({"", "please enter"})
"""Sample names that mean "no sample yet": the MetaExperiment's placeholder and nothing."""

DEFAULT_DATA_ROOT = "/data/visitor"
SAMPLE_PLACEHOLDER = "please enter"


def sample_specified(sample: str) -> bool:
    return sample not in UNSPECIFIED_SAMPLES


@dataclass(frozen=True, slots=True)
class Experiment:
    """What a MetaExperiment publishes to its followers."""

    proposal: str = ""
    sample: str = ""
    data_root: str = ""


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """One dataset, complete or aborted, ready to become an ICAT document."""

    proposal: str
    beamline: str
    name: str
    location: str
    sample: str
    start: datetime
    end: datetime
    complete: bool = True
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    datafiles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InvestigationRecord:
    """An investigation start: the proposal a beamline begins to measure for."""

    proposal: str
    beamline: str
    start: datetime
