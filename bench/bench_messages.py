"""Time to build one dataset document: our builder against pyicat-plus's serializer.

A 200-parameter, 100-file dataset, parameters drawn from the real ICAT names across
their types, values as Tango clients send them (mostly text). Median of N runs each.

    /work/venv/bin/python bench/bench_messages.py
"""

from __future__ import annotations

import datetime
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any
from unittest import mock

from icat_servers.icatcore.definitions import ValueKind, parameter_specs
from icat_servers.icatcore.messages import dataset_xml
from icat_servers.icatcore.records import DatasetRecord

PARAMETERS = 200
FILES = 100
RUNS_OURS = 2000
RUNS_PYICAT = 30
MACHINE = "lid00ctrl.esrf.fr"
SOFTWARE = "icat-servers_v1"

_SAMPLE_VALUES: dict[ValueKind, Any] = {
    ValueKind.TEXT: "a description <with> & markup",
    ValueKind.FLOAT: "0.125",
    ValueKind.INT: "42",
    ValueKind.BOOL: "true",
    ValueKind.QUANTITY: "12.5",
    ValueKind.CUSTOM: "1.5 2.5",
    ValueKind.DATETIME: "2024-05-06T07:08:09Z",
}


def bench_record() -> DatasetRecord:
    """Every few names of each type, so the mix follows the definitions' own mix."""
    specs = parameter_specs()
    reserved = {
        "Sample_name",
        "datasetName",
        "location",
        "proposal",
        "beamlineID",
        "startDate",
        "endDate",
        "machine",
        "software",
        "complete",
        "input_datasets",
    }
    candidates = [
        spec
        for spec in sorted(specs.values(), key=lambda s: s.name)
        if spec.kind in _SAMPLE_VALUES
        and spec.name not in reserved
        and not spec.renamed_to
        and not spec.name.startswith(("definition", "technique"))
        and (spec.kind is not ValueKind.CUSTOM or "Slit" in spec.name)
    ]
    step = max(1, len(candidates) // PARAMETERS)
    chosen = candidates[::step][:PARAMETERS]
    parameters = {spec.name: _SAMPLE_VALUES[spec.kind] for spec in chosen}
    start = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
    return DatasetRecord(
        proposal="HG-123",
        beamline="ID00",
        name="sample_0001",
        location="/data/visitor/hg123/id00/20240506/RAW_DATA/sample/sample_0001",
        sample="sample",
        start=start,
        end=start + datetime.timedelta(minutes=3),
        parameters=parameters,
        datafiles=tuple(
            f"/data/visitor/hg123/id00/20240506/RAW_DATA/sample/sample_0001/scan{i:04d}.h5"
            for i in range(FILES)
        ),
    )


def pyicat_builder(record: DatasetRecord) -> Callable[[], bytes]:
    from pyicat_plus._icat_messaging.serializers import dataset as pyicat

    raw = pyicat.raw_serialize_dataset_message
    datafiles = [{"location": path} for path in record.datafiles]

    def with_files(data: dict[str, Any], indent: str | None = None) -> bytes:
        return bytes(raw(dict(data, datafile=datafiles), indent=indent))

    metadata: dict[str, Any] = dict(record.parameters)
    metadata.update(
        Sample_name=record.sample,
        startDate=record.start,
        endDate=record.end,
        machine=MACHINE,
        software=SOFTWARE,
        complete=record.complete,
    )

    def build() -> bytes:
        with (
            warnings.catch_warnings(),
            mock.patch.object(pyicat, "raw_serialize_dataset_message", with_files),
        ):
            warnings.simplefilter("ignore")
            return bytes(
                pyicat.serialize_dataset_message(
                    beamline=record.beamline,
                    proposal=record.proposal,
                    dataset=record.name,
                    path=record.location,
                    metadata=metadata,
                )
            )

    return build


def median_seconds(build: Callable[[], bytes], runs: int) -> float:
    build()  # warm caches (definitions, imports) outside the measurement
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        build()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    record = bench_record()
    ours = median_seconds(
        lambda: dataset_xml(record, machine=MACHINE, software=SOFTWARE), RUNS_OURS
    )
    reference_build = pyicat_builder(record)
    reference = median_seconds(reference_build, RUNS_PYICAT)
    same = dataset_xml(record, machine=MACHINE, software=SOFTWARE) == reference_build()
    kinds: dict[str, int] = {}
    specs = parameter_specs()
    for name in record.parameters:
        kinds[specs[name].kind.value] = kinds.get(specs[name].kind.value, 0) + 1
    print(f"dataset: {len(record.parameters)} parameters {kinds}, {len(record.datafiles)} files")
    print(f"ours       median of {RUNS_OURS:5d}: {ours * 1e6:9.1f} us")
    print(f"pyicat-plus median of {RUNS_PYICAT:4d}: {reference * 1e6:9.1f} us")
    print(f"ratio: ours is {reference / ours:.0f}x faster (target >= 100x)")
    print(f"byte-identical documents: {same}")


if __name__ == "__main__":
    main()
