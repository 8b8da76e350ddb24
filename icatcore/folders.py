"""`dataFolderPattern`: where a dataset's files are, from the session's facts."""

from __future__ import annotations

import string

from icat_servers.icatcore.errors import ConfigurationError

FIELDS = ("dataRoot", "proposal", "beamlineID", "sampleName", "datasetName", "scanName")
"""The fields a pattern may use; `{scanName}` is tango-metadata's name for `{datasetName}`."""
DEFAULT_PATTERN = "{dataRoot}"


def check_pattern(pattern: str) -> str:
    """Refuse a pattern that names an unknown field, so the fault shows at start-up."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as error:
        raise ConfigurationError(
            f"dataFolderPattern {pattern!r} is not a valid pattern ({error}): "
            f"use fields like {{dataRoot}}/{{proposal}}"
        ) from None
    unknown = sorted({name for name in names if name not in FIELDS})
    if unknown or any(not name for name in names):
        raise ConfigurationError(
            f"dataFolderPattern {pattern!r} uses unknown field(s) {unknown or ['{}']}: "
            f"the known fields are {', '.join('{' + f + '}' for f in FIELDS)}"
        )
    return pattern


def data_folder(
    pattern: str, *, data_root: str, proposal: str, beamline: str, sample: str, dataset: str
) -> str:
    return pattern.format(
        dataRoot=data_root,
        proposal=proposal,
        beamlineID=beamline,
        sampleName=sample,
        datasetName=dataset,
        scanName=dataset,
    )
