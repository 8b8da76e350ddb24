"""Cost of one MetadataManager chart event, in microseconds (median and p90).

The chart is pure (no Tango, no files, no clock), so this is the floor the device adds
to every Tango call. Each event is timed on its own with `time.perf_counter_ns`, over
many repetitions of a whole dataset cycle:

    experiment_changed (new sample) -> name_dataset -> set_parameters (20 values)
    -> start_dataset -> add_file x 10 -> end_dataset (20 parameters, 10 files)

and the whole cycle is timed as one unit too.

    /work/venv/bin/python bench/bench_chart.py [--cycles N]
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from time import perf_counter_ns, process_time_ns

from icat_servers.icatcore.definitions import ValueKind, parameter_specs
from icat_servers.icatcore.records import Experiment, ParameterValue
from icat_servers.statecharts.metadata_manager import MetadataManagerChart, Settings

BEAMLINE = "id00"
META = "id00/metaexp/bench"
PATTERN = "{dataRoot}/{proposal}/{beamlineID}/{sampleName}/{datasetName}"
PARAMETERS = 20
FILES = 10
DEFAULT_CYCLES = 2000

EVENTS = (
    "experiment_changed",
    "name_dataset",
    "set_parameters",
    "start_dataset",
    "add_file",
    "end_dataset",
    "cycle",
)


def parameter_values() -> dict[str, ParameterValue]:
    """20 real ICAT names with text values, as Tango clients send them."""
    names = sorted(
        spec.name
        for spec in parameter_specs().values()
        if spec.kind is ValueKind.TEXT and not spec.renamed_to and spec.name.startswith("Sample")
    )
    if len(names) < PARAMETERS:
        names = sorted(
            spec.name
            for spec in parameter_specs().values()
            if spec.kind is ValueKind.TEXT and not spec.renamed_to
        )
    return {name: f"value of {name}" for name in names[:PARAMETERS]}


class Timings:
    def __init__(self) -> None:
        self.samples: dict[str, list[int]] = {name: [] for name in EVENTS}

    def timed(self, name: str, call: Callable[[], object]) -> None:
        started = perf_counter_ns()
        call()
        self.samples[name].append(perf_counter_ns() - started)


def cycle(
    chart: MetadataManagerChart,
    index: int,
    values: dict[str, ParameterValue],
    files: list[str],
    at: datetime,
    timings: Timings | None,
) -> None:
    """One dataset, from a new sample to its registration."""
    experiment = Experiment("hg123", f"sample{index}", "/data/visitor")
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "experiment_changed",
            lambda: chart.handle("experiment_changed", experiment=experiment, at=at),
        ),
        ("name_dataset", lambda: chart.handle("name_dataset", name=f"dataset_{index:06d}")),
        ("set_parameters", lambda: chart.handle("set_parameters", values=values)),
        ("start_dataset", lambda: chart.handle("start_dataset", at=at)),
    ]
    steps += [
        ("add_file", functools.partial(chart.handle, "add_file", path=path)) for path in files
    ]
    steps.append(("end_dataset", lambda: _end(chart, at)))
    for name, step in steps:
        if timings is None:
            step()
        else:
            timings.timed(name, step)


def _end(chart: MetadataManagerChart, at: datetime) -> None:
    effects = chart.handle("end_dataset", at=at + timedelta(seconds=1))
    record = effects[0].dataset  # type: ignore[union-attr]
    assert len(record.parameters) == PARAMETERS and len(record.datafiles) == FILES


def percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=DEFAULT_CYCLES)
    options = parser.parse_args()

    values = parameter_values()
    assert len(values) == PARAMETERS, values
    files = [f"/data/visitor/hg123/id00/sample/ds/scan{i:04d}.h5" for i in range(FILES)]
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    chart = MetadataManagerChart(Settings(BEAMLINE, META, PATTERN))
    chart.handle("experiment_changed", experiment=Experiment("hg123", "", "/data"), at=at)

    for index in range(200):  # warm-up: imports, definitions, callback caches
        cycle(chart, index, values, files, at, None)

    timings = Timings()
    gc.collect()
    for index in range(options.cycles):
        started = perf_counter_ns()
        cycle(chart, index, values, files, at, timings)
        timings.samples["cycle"].append(perf_counter_ns() - started)

    # The whole cycle without the per-step timers, for the honest total.
    bare: list[int] = []
    cpu_started = process_time_ns()
    for index in range(options.cycles):
        started = perf_counter_ns()
        cycle(chart, index, values, files, at, None)
        bare.append(perf_counter_ns() - started)
    cpu_per_cycle = (process_time_ns() - cpu_started) / options.cycles

    print(
        f"MetadataManager chart, {options.cycles} dataset cycles "
        f"({PARAMETERS} parameters, {FILES} files per dataset)"
    )
    print(f"{'event':<28}{'median us':>12}{'p90 us':>12}{'n':>9}")
    for name in EVENTS:
        samples = timings.samples[name]
        label = name
        if name == "set_parameters":
            label = f"set_parameters ({PARAMETERS} values)"
        elif name == "end_dataset":
            label = f"end_dataset ({PARAMETERS}p, {FILES}f)"
        elif name == "cycle":
            label = f"cycle (4 + {FILES} + 1 events)"
        print(
            f"{label:<28}{statistics.median(samples) / 1e3:12.1f}"
            f"{percentile(samples, 0.9) / 1e3:12.1f}{len(samples):9d}"
        )
    print(
        f"{'cycle, untimed steps':<28}{statistics.median(bare) / 1e3:12.1f}"
        f"{percentile(bare, 0.9) / 1e3:12.1f}{len(bare):9d}"
    )
    events = 4 + FILES + 1
    print(
        f"CPU time (process_time): {cpu_per_cycle / 1e3:.1f} us per cycle, "
        f"{cpu_per_cycle / events / 1e3:.1f} us per event on average "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
