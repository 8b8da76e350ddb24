"""The servers over Tango: StartDataset + EndDataset round trip, and memory over many datasets.

Real processes on loopback: an embedded Tango database (pytango-db) and both console
scripts, with ICAT_SERVERS_STATE in a temporary directory and no queueURLs, so every
message stays in the durable outbox (its fsync is part of what is measured). The
client is a DeviceProxy in this process.

(a) Round trip: median of StartDataset and of EndDataset (datasetName written, untimed,
    before each start), against floors measured in the same run, interleaved: a
    do-nothing command of a trivial pytango device hosted in the MetadataManager's own
    server process (the headline floor: "a do-nothing command of a device on the same
    server"), the MetadataManager's own cheapest paths (command_inout("State"), a read of
    the constant attribute metadataFile) and the trivial device in a process of its own.
    Target: (StartDataset + EndDataset) / (2 x same-server floor) <= 1.5. Reference
    figures from the same run: the median cost of appending ~2 KB to a file beside the
    outbox and fdatasync-ing it (so the lowest ratio a durable EndDataset can reach on
    this disk), and of a bare python-statemachine transition.
(b) Memory: VmRSS of the MetaExperiment and MetadataManager processes every N/10
    datasets up to N (default 10,000), proposal and sample changing every 100 datasets;
    target: no growth from 1,000 to N beyond noise. The outbox size on disk is shown too.
(c) With --profile: the MetadataManager again, started under a wrapper that profiles
    (cProfile) every command's work inside the server, and times it, so that the
    client round trip splits into "our Python" and "Tango and the rest".
(d) One big dataset (after (b); --big-files 0 skips it): StartDataset, N lastDataFile
    writes (default 10,000), EndDataset. Median and p90 of a write over the first and
    the last 500 writes, and their ratio (near 1.0: the cost of a file does not grow
    with the dataset, as the outbox's journal appends one row per file), the EndDataset
    time, and the number of files in the XML copy of the registered dataset.

    /work/venv/bin/python bench/bench_tango.py [--datasets N] [--round-trips N]
        [--big-files N] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import itertools
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tango  # noqa: E402
from tango.server import Device, attribute, command, run  # noqa: E402

from icat_servers.adapters.embedded_db import EmbeddedDatabase  # noqa: E402
from icat_servers.adapters.processes import start_server  # noqa: E402
from tests.services import servers  # noqa: E402

META = "id00/metaexp/bench"
MANAGER = "id00/metadata/bench"
SAME_SERVER_FLOOR = "bench/floor/same"
"""A BenchFloor device in the MetadataManager's server process."""
PROFILED_MANAGER = "id00/metadata/profiled"
BOOT_MANAGER = "id00/metadata/boot"
BOOT_FLOOR = "bench/floor/boot"
FLOOR = "bench/floor/1"
BEAMLINE = "id00"
PATTERN = "{dataRoot}/{proposal}/{beamlineID}/{sampleName}/{datasetName}"
TECHNIQUE = ["Sample_description", "InstrumentSlitPrimary_horizontal_gap"]
INSTANCE = "bench"
TARGET_RATIO = 1.5
CLIENT_TIMEOUT_MS = 15_000
"""Longer than Tango's 3.2 s monitor timeout, so a stalled call is counted, not fatal."""
STALL_S = 2.5
SAME_FLOOR_CALL = "BenchFloor on the MetadataManager's server Nothing"
FSYNC_WRITES = 300
FSYNC_BYTES = 2048
BLOCK_BYTES = 4096
"""One preallocated block, rewritten in place and fdatasync-ed: the cheapest durable write."""
CYCLE = "datasetName + StartDataset + EndDataset"
OURS_CYCLE = f"MetadataManager {CYCLE}"
BLOCK_FLUSH = f"fdatasync of a preallocated {BLOCK_BYTES} B block"
FLOOR_CYCLE = f"BenchFloor {CYCLE}"
PING_STARTS = 3
"""Process starts timed from exec to the first answered ping, per server kind."""
MEMORY_TARGET = 1.25
START_TARGET_S = 1.0
BIG_WINDOW = 500
"""(d) compares the first and the last BIG_WINDOW lastDataFile writes."""
XML_FILE_TAG = "<tns:datafile>"
"""One per file in messages.dataset_xml (a dataset's own <tns:location> is not one)."""


@dataclass(frozen=True)
class BigDataset:
    writes: list[int]
    """ns per lastDataFile write, in order."""
    end_ns: int
    files_in_xml: int | None
    """<tns:datafile> elements in the metadataFile copy; None if it did not appear."""
    xml_path: str
    manager_kib: tuple[int, int]
    """MetadataManager VmRSS before StartDataset and after EndDataset."""
    seconds: float


@dataclass(frozen=True)
class Checkpoint:
    datasets: int
    meta_kib: int
    manager_kib: int
    outbox_bytes: int
    seconds: float
    start_us: float
    end_us: float
    floor_kib: int = 0
    """The do-nothing pytango server (BenchFloor in its own process)."""


# -- the trivial device: the floor in a process of its own ----------------------------


class BenchFloor(Device):  # type: ignore[misc]
    """Does nothing: the cost of a Tango call to a pytango device, and nothing else."""

    @command  # type: ignore[untyped-decorator]
    def Nothing(self) -> None:
        pass

    @attribute(dtype=str)  # type: ignore[untyped-decorator]
    def constant(self) -> str:
        return ""

    # The MetadataManager's dataset cycle, doing nothing: the floor of that cycle.

    def init_device(self) -> None:
        super().init_device()
        self.name = ""

    @attribute(dtype=str)  # type: ignore[untyped-decorator]
    def datasetName(self) -> str:
        return self.name

    @datasetName.write  # type: ignore[untyped-decorator, no-redef]
    def datasetName(self, value: str) -> None:
        self.name = value

    @command  # type: ignore[untyped-decorator]
    def StartDataset(self) -> None:
        pass

    @command  # type: ignore[untyped-decorator]
    def EndDataset(self) -> None:
        pass


def serve_floor(instance: str) -> None:
    run((BenchFloor,), args=["BenchFloor", instance])


def serve_manager(instance: str) -> None:
    """The MetadataManager's server with a BenchFloor device beside it, in one process.

    As `adapters.tango.metadata_manager.main`, with one more device class: the floor
    is then a do-nothing command of a device on the same server.
    """
    from icat_servers.adapters.tango.metadata_manager import MetadataManager

    sys.setswitchinterval(0.0005)  # as metadata_manager.main does
    run((MetadataManager, BenchFloor), args=["MetadataManager", instance])


# -- the profiled MetadataManager: the device unchanged, its `event` observed ------------


def serve_profiled_manager(instance: str, output: Path) -> None:
    """Run the MetadataManager with every `event` call profiled and timed.

    cProfile follows one thread; Tango calls arrive on omniORB threads, so the profiler
    is switched on and off around each call, in the thread that runs it (Tango
    serializes calls to one device). The stats are written every 100 calls.
    """
    from icat_servers.adapters.tango import metadata_manager

    device_class = metadata_manager.MetadataManager
    original: Callable[..., None] = device_class.event
    profile = cProfile.Profile()
    timings: dict[str, list[int]] = {}
    guard = threading.Lock()

    def event(self: Any, name: str, /, **arguments: object) -> None:
        with guard:
            started = time.perf_counter_ns()
            profile.enable()
            try:
                original(self, name, **arguments)
            finally:
                profile.disable()
                timings.setdefault(name, []).append(time.perf_counter_ns() - started)
                calls = sum(len(values) for values in timings.values())
                if calls % 100 == 0:
                    profile.dump_stats(output)
                    output.with_suffix(".json").write_text(json.dumps(timings))

    device_class.event = event  # type: ignore[method-assign]
    metadata_manager.main([instance])


# -- processes, stopped by their PID ----------------------------------------------------


@dataclass
class Process:
    name: str
    argv: list[str]
    environment: Mapping[str, str]
    log: Path
    devices: Sequence[str]
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self, timeout: float = 90.0) -> None:
        self.popen = start_server(self.argv, self.devices, self.log, self.environment, timeout)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=15)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.name} (pid {self.pid})")


def register(
    server: str, device_class: str, devices: Mapping[str, Mapping[str, Sequence[str]]]
) -> None:
    """Devices and their properties in the database of TANGO_HOST, as the tests put them."""
    servers.register(os.environ["TANGO_HOST"], server, device_class, devices)


def manager_properties() -> dict[str, list[str]]:
    return {
        "beamlineID": [BEAMLINE],
        "metaExperimentDevice": [META],
        "dataFolderPattern": [PATTERN],
        "parameters": TECHNIQUE,
    }


def wait_for(proxy: tango.DeviceProxy, state: tango.DevState, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.state() != state:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{proxy.dev_name()} is {proxy.state()}, not {state}: {proxy.status()}"
            )
        time.sleep(0.1)


def directory_bytes(path: Path) -> int:
    total = 0
    for item in path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # an XML copy pruned meanwhile
            total += item.stat().st_size if item.is_file() else 0
    return total


def ns_median(values: list[int]) -> float:
    return float(statistics.median(values))


def ns_p90(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))])


def timed(samples: list[int], call: Callable[[], object]) -> None:
    started = time.perf_counter_ns()
    call()
    samples.append(time.perf_counter_ns() - started)


class Block:
    """One preallocated BLOCK_BYTES block of a file, rewritten in place and fdatasync-ed:
    the file's size and blocks never change, so only the data goes to disk (the cheapest
    durable write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = b"x" * (BLOCK_BYTES - 1) + b"\n"
        self.descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.posix_fallocate(self.descriptor, 0, BLOCK_BYTES)
        os.pwrite(self.descriptor, self.data, 0)
        os.fsync(self.descriptor)

    def flush(self) -> None:
        os.pwrite(self.descriptor, self.data, 0)
        os.fdatasync(self.descriptor)

    def close(self) -> None:
        os.close(self.descriptor)
        self.path.unlink()


# -- the bench ------------------------------------------------------------------------


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.state.mkdir()
        self.environment = {"ICAT_SERVERS_STATE": str(self.state)}
        self.database = EmbeddedDatabase(root / "db")
        self.processes: list[Process] = []
        self.datasets = 0
        self.sessions = 0
        self.stalls: list[int] = []
        self.spy_seconds = 0
        self.spurious_off: list[tuple[int, str]] = []

    def start(self) -> None:
        os.environ.pop("TANGO_HOST", None)
        tango_host = self.database.start()
        os.environ["TANGO_HOST"] = tango_host
        self.environment["TANGO_HOST"] = tango_host
        register(f"MetaExperiment/{INSTANCE}", "MetaExperiment", {META: {"beamlineID": [BEAMLINE]}})
        register(f"MetadataManager/{INSTANCE}", "MetadataManager", {MANAGER: manager_properties()})
        # The same server entry, a second device class: the same-server floor.
        register(f"MetadataManager/{INSTANCE}", "BenchFloor", {SAME_SERVER_FLOOR: {}})
        register(f"BenchFloor/{INSTANCE}", "BenchFloor", {FLOOR: {}})
        self.check_same_server()
        bin_dir = Path(sys.executable).parent
        self.meta = self.spawn(
            "MetaExperiment", [str(bin_dir / "MetaExperiment"), INSTANCE], [META]
        )
        self.manager = self.spawn(
            "MetadataManager",
            [sys.executable, __file__, "--manager-server", INSTANCE],
            [MANAGER, SAME_SERVER_FLOOR],
        )
        self.floor = self.spawn(
            "BenchFloor", [sys.executable, __file__, "--floor-server", INSTANCE], [FLOOR]
        )
        self.meta_proxy = tango.DeviceProxy(META)
        self.manager_proxy = tango.DeviceProxy(MANAGER)
        self.floor_proxy = tango.DeviceProxy(FLOOR)
        self.same_floor_proxy = tango.DeviceProxy(SAME_SERVER_FLOOR)
        proxies = (self.meta_proxy, self.manager_proxy, self.floor_proxy, self.same_floor_proxy)
        for proxy in proxies:
            proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
        self.meta_proxy.write_attribute("dataRoot", "/data/visitor")
        self.new_session(self.manager_proxy)

    @staticmethod
    def check_same_server() -> None:
        """The database holds both classes and both devices under the manager's server."""
        database = tango.Database()
        server = f"MetadataManager/{INSTANCE}"
        found = {
            device_class: {name.lower() for name in database.get_device_name(server, device_class)}
            for device_class in ("MetadataManager", "BenchFloor")
        }
        expected = {"MetadataManager": {MANAGER}, "BenchFloor": {SAME_SERVER_FLOOR}}
        if found != expected:
            raise RuntimeError(f"server {server} holds {found}, not {expected}")

    def spawn(self, name: str, argv: list[str], devices: list[str]) -> Process:
        process = Process(name, argv, self.environment, self.root / f"{name}.log", devices)
        self.processes.append(process)
        process.start()
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.database.stop()

    def new_session(self, follower: tango.DeviceProxy) -> None:
        """A new proposal and sample: the MetaExperiment writes and tells its followers."""
        self.sessions += 1
        self.meta_proxy.write_attribute("proposal", f"hg{100 + self.sessions}")
        self.meta_proxy.write_attribute("sample", f"sample_{self.sessions:04d}")
        wait_for(follower, tango.DevState.STANDBY)

    def name_dataset(self, proxy: tango.DeviceProxy, name: str) -> None:
        """Write datasetName; a follower found unexpectedly OFF is waited for and counted."""
        try:
            proxy.write_attribute("datasetName", name)
        except tango.DevFailed:
            if proxy.state() != tango.DevState.OFF:
                raise
            self.spurious_off.append((self.datasets, proxy.status().splitlines()[0]))
            wait_for(proxy, tango.DevState.STANDBY)
            proxy.write_attribute("datasetName", name)

    def dataset(self, proxy: tango.DeviceProxy, *, files: int = 0) -> tuple[int, int]:
        """One dataset as BLISS makes it; returns (StartDataset ns, EndDataset ns)."""
        if self.datasets and self.datasets % 100 == 0:
            self.new_session(proxy)
        self.datasets += 1
        self.name_dataset(proxy, f"dataset_{self.datasets:06d}")
        proxy.command_inout(
            "SetParameters", json.dumps({"Sample_description": f"powder {self.datasets}"})
        )
        started = time.perf_counter_ns()
        proxy.command_inout("StartDataset")
        start_ns = time.perf_counter_ns() - started
        for index in range(files):
            proxy.write_attribute("lastDataFile", f"/data/scan{index:04d}.h5")
        started = time.perf_counter_ns()
        proxy.command_inout("EndDataset")
        return start_ns, time.perf_counter_ns() - started

    # (a) ------------------------------------------------------------------------------

    def round_trip(self, repetitions: int, warmup: int = 50) -> dict[str, list[int]]:
        """Every call timed in each iteration, interleaved, with one block fdatasync: the
        floors, ours and the disk flush are measured under the same load."""
        samples: dict[str, list[int]] = {
            name: []
            for name in (
                "StartDataset",
                "EndDataset",
                SAME_FLOOR_CALL,
                "MetadataManager State",
                "MetadataManager read metadataFile",
                "BenchFloor Nothing",
                "BenchFloor State",
                "MetadataManager write datasetName",
                "BenchFloor write datasetName",
                "BenchFloor StartDataset",
                "BenchFloor EndDataset",
                OURS_CYCLE,
                FLOOR_CYCLE,
                BLOCK_FLUSH,
            )
        }
        block = Block(self.state / "fdatasync.block")
        try:
            self._round_trips(samples, block, warmup + repetitions, warmup)
        finally:
            block.close()
        return samples

    def _round_trips(
        self, samples: dict[str, list[int]], block: Block, iterations: int, warmup: int
    ) -> None:
        manager, floor, same = self.manager_proxy, self.floor_proxy, self.same_floor_proxy
        for iteration in range(iterations):
            iteration_started = time.monotonic()
            if self.datasets and self.datasets % 100 == 0:
                self.new_session(manager)
            self.datasets += 1
            name = f"dataset_{self.datasets:06d}"
            take = iteration >= warmup
            row: dict[str, list[int]] = {call: [] for call in samples}
            timed(
                row["MetadataManager write datasetName"],
                functools.partial(self.name_dataset, manager, name),
            )
            timed(row["StartDataset"], lambda: manager.command_inout("StartDataset"))
            timed(row["MetadataManager State"], lambda: manager.command_inout("State"))
            timed(row[SAME_FLOOR_CALL], lambda: same.command_inout("Nothing"))
            timed(row["BenchFloor Nothing"], lambda: floor.command_inout("Nothing"))
            timed(row["EndDataset"], lambda: manager.command_inout("EndDataset"))
            timed(
                row["MetadataManager read metadataFile"],
                lambda: manager.read_attribute("metadataFile"),
            )
            timed(row["BenchFloor State"], lambda: floor.command_inout("State"))
            timed(
                row["BenchFloor write datasetName"],
                functools.partial(floor.write_attribute, "datasetName", name),
            )
            timed(row["BenchFloor StartDataset"], lambda: floor.command_inout("StartDataset"))
            timed(row["BenchFloor EndDataset"], lambda: floor.command_inout("EndDataset"))
            row[OURS_CYCLE].append(
                sum(
                    row[call][0]
                    for call in ("MetadataManager write datasetName", "StartDataset", "EndDataset")
                )
            )
            row[FLOOR_CYCLE].append(
                sum(
                    row[call][0]
                    for call in (
                        "BenchFloor write datasetName",
                        "BenchFloor StartDataset",
                        "BenchFloor EndDataset",
                    )
                )
            )
            timed(row[BLOCK_FLUSH], block.flush)
            if time.monotonic() - iteration_started > STALL_S:
                self.stalls.append(self.datasets)
            if take:
                for name, values in row.items():
                    samples[name] += values

    def fdatasync(self, writes: int = FSYNC_WRITES, warmup: int = 10) -> list[int]:
        """Append FSYNC_BYTES to a file in the state directory (the outbox's file system)
        and fdatasync it, `writes` times: ns per append + flush."""
        path = self.state / "fdatasync.probe"
        payload = b"x" * (FSYNC_BYTES - 1) + b"\n"
        samples: list[int] = []
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for iteration in range(warmup + writes):
                started = time.perf_counter_ns()
                os.write(descriptor, payload)
                os.fdatasync(descriptor)
                if iteration >= warmup:
                    samples.append(time.perf_counter_ns() - started)
        finally:
            os.close(descriptor)
            path.unlink()
        return samples

    def block_flushes(self, writes: int = FSYNC_WRITES, warmup: int = 10) -> list[int]:
        """The block fdatasync back to back, nothing else running: ns each."""
        block = Block(self.state / "fdatasync.block")
        samples: list[int] = []
        try:
            for _ in range(warmup + writes):
                timed(samples, block.flush)
        finally:
            block.close()
        return samples[warmup:]

    def start_to_ping(self, starts: int = PING_STARTS) -> dict[str, list[float]]:
        """Seconds from starting a server process to its device answering a ping.

        A MetadataManager (the console script, a device of its own) and the do-nothing
        pytango server, each started `starts` times, each stopped by its PID. A new
        DeviceProxy per attempt: a proxy that failed to connect waits before it tries again.
        """
        register(
            f"MetadataManager/{INSTANCE}-boot",
            "MetadataManager",
            {BOOT_MANAGER: manager_properties()},
        )
        register(f"BenchFloor/{INSTANCE}-boot", "BenchFloor", {BOOT_FLOOR: {}})
        bin_dir = Path(sys.executable).parent
        kinds = {
            "MetadataManager": (
                [str(bin_dir / "MetadataManager"), f"{INSTANCE}-boot"],
                BOOT_MANAGER,
            ),
            "do-nothing pytango server": (
                [sys.executable, __file__, "--floor-server", f"{INSTANCE}-boot"],
                BOOT_FLOOR,
            ),
        }
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(starts):
            for kind, (argv, device) in kinds.items():
                log = (self.root / f"boot-{device.replace('/', '_')}.log").open("ab")
                started = time.monotonic()
                popen = subprocess.Popen(
                    argv,
                    env={**os.environ, **self.environment},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    while True:
                        try:
                            tango.DeviceProxy(device).ping()
                            break
                        except tango.DevFailed:
                            if popen.poll() is not None or time.monotonic() - started > 60:
                                raise RuntimeError(
                                    f"{kind} did not answer: see {log.name}"
                                ) from None
                            time.sleep(0.005)
                    times[kind].append(time.monotonic() - started)
                finally:
                    os.kill(popen.pid, signal.SIGKILL)
                    popen.wait(timeout=30)
                    log.close()
        return times

    # (b) ------------------------------------------------------------------------------

    def memory(self, total: int, checkpoints: int = 10) -> list[Checkpoint]:
        """RSS, outbox and latency every total/checkpoints datasets."""
        step = max(1, total // checkpoints)
        rows: list[Checkpoint] = []
        started = time.monotonic()
        starts: list[int] = []
        ends: list[int] = []
        spy: subprocess.Popen[bytes] | None = None
        while self.datasets < total:
            if spy is None and self.spy_seconds and rows:
                spy = self.start_spy()
            call_started = time.monotonic()
            start_ns, end_ns = self.dataset(self.manager_proxy, files=1)
            if time.monotonic() - call_started > STALL_S:
                self.stalls.append(self.datasets)
            starts.append(start_ns)
            ends.append(end_ns)
            if self.datasets % step == 0 or self.datasets == total:
                row = Checkpoint(
                    datasets=self.datasets,
                    meta_kib=self.meta.rss_kib(),
                    manager_kib=self.manager.rss_kib(),
                    outbox_bytes=directory_bytes(self.state / "outbox"),
                    seconds=time.monotonic() - started,
                    start_us=ns_median(starts) / 1e3,
                    end_us=ns_median(ends) / 1e3,
                    floor_kib=self.floor.rss_kib(),
                )
                rows.append(row)
                starts, ends = [], []
                print(
                    f"  {row.datasets:6d} datasets  RSS MetaExperiment "
                    f"{row.meta_kib / 1024:6.1f} MiB, MetadataManager "
                    f"{row.manager_kib / 1024:6.1f} MiB; outbox {row.outbox_bytes / 1e6:6.1f} MB;"
                    f" median StartDataset {row.start_us:6.0f} us, EndDataset {row.end_us:6.0f}"
                    f" us; do-nothing server {row.floor_kib / 1024:5.1f} MiB ({row.seconds:.0f} s)",
                    flush=True,
                )
        if spy is not None:
            spy.wait(timeout=self.spy_seconds + 60)
            summarize_spy(self.root / "manager.spy.txt")
        return rows

    # (d) ------------------------------------------------------------------------------

    def big_dataset(self, files: int, copy_timeout: float = 60.0) -> BigDataset:
        """One dataset of `files` files, each write timed, then EndDataset timed."""
        proxy = self.manager_proxy
        if self.datasets and self.datasets % 100 == 0:
            self.new_session(proxy)
        self.datasets += 1
        self.name_dataset(proxy, f"dataset_{self.datasets:06d}")
        wait_for(proxy, tango.DevState.ON)
        before_copy = str(proxy.read_attribute("metadataFile").value)
        rss_before = self.manager.rss_kib()
        started = time.monotonic()
        proxy.command_inout("StartDataset")
        writes: list[int] = []
        for index in range(1, files + 1):
            path = f"/data/visitor/ab1234/id00/big/f{index:06d}.h5"
            write_started = time.perf_counter_ns()
            proxy.write_attribute("lastDataFile", path)
            writes.append(time.perf_counter_ns() - write_started)
        if any(write > STALL_S * 1e9 for write in writes):
            self.stalls.append(self.datasets)
        end: list[int] = []
        timed(end, lambda: proxy.command_inout("EndDataset"))
        seconds = time.monotonic() - started
        rss_after = self.manager.rss_kib()
        # The XML copy is written after EndDataset returns, by the housekeeper thread.
        deadline = time.monotonic() + copy_timeout
        copy = before_copy
        while copy == before_copy and time.monotonic() < deadline:
            time.sleep(0.05)
            copy = str(proxy.read_attribute("metadataFile").value)
        counted: int | None = None
        if copy != before_copy and copy:
            with contextlib.suppress(OSError):
                counted = Path(copy).read_text(errors="replace").count(XML_FILE_TAG)
        return BigDataset(writes, end[0], counted, copy, (rss_before, rss_after), seconds)

    def start_spy(self) -> subprocess.Popen[bytes]:
        """py-spy samples the unchanged MetadataManager, waits included (--idle)."""
        output = self.root / "manager.spy.txt"
        print(f"  py-spy: sampling MetadataManager pid {self.manager.pid} for {self.spy_seconds} s")
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(self.manager.pid),
                "--duration",
                str(self.spy_seconds),
                "--idle",
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "py-spy.log").open("wb"),
        )

    # (c) ------------------------------------------------------------------------------

    def profile(self, repetitions: int) -> None:
        output = self.root / "manager.prof"
        register(
            f"MetadataManager/{INSTANCE}-profiled",
            "MetadataManager",
            {PROFILED_MANAGER: manager_properties()},
        )
        profiled = self.spawn(
            "MetadataManager-profiled",
            [
                sys.executable,
                __file__,
                "--profiled-manager",
                f"{INSTANCE}-profiled",
                "--profile-out",
                str(output),
            ],
            [PROFILED_MANAGER],
        )
        proxy = tango.DeviceProxy(PROFILED_MANAGER)
        proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
        wait_for(proxy, tango.DevState.STANDBY)
        client: dict[str, list[int]] = {"StartDataset": [], "EndDataset": []}
        for count in range(1, repetitions + 1):
            if count % 100 == 0:
                self.new_session(proxy)
            self.name_dataset(proxy, f"profiled_{count:06d}")
            timed(client["StartDataset"], lambda: proxy.command_inout("StartDataset"))
            timed(client["EndDataset"], lambda: proxy.command_inout("EndDataset"))
        time.sleep(0.5)
        profiled.stop()
        server = json.loads(output.with_suffix(".json").read_text())
        print(f"\n(c) profiled MetadataManager, {repetitions} datasets (median us)")
        print(f"{'command':<16}{'client round trip':>20}{'inside event()':>18}{'rest':>10}")
        for command_name, event_name in (
            ("StartDataset", "start_dataset"),
            ("EndDataset", "end_dataset"),
        ):
            outside = ns_median(client[command_name]) / 1e3
            inside = ns_median(server[event_name]) / 1e3
            print(f"{command_name:<16}{outside:20.0f}{inside:18.0f}{outside - inside:10.0f}")
        print("  (event() times are with the profiler on: an upper bound)")
        stats = pstats.Stats(str(output))
        stats.sort_stats("cumulative")
        print(f"\ncProfile of every event() call, top by cumulative time ({output}):")
        stats.print_stats(30)
        stats.sort_stats("tottime")
        print("top by own time:")
        stats.print_stats(20)


def transition_samples(count: int = 5000, warmup: int = 500) -> list[int]:
    """ns per event of a bare two-state python-statemachine, in this process."""
    from statemachine import State, StateMachine

    class Toggle(StateMachine):  # type: ignore[misc]
        off = State(initial=True)
        on = State()
        flip = off.to(on) | on.to(off)

    machine = Toggle()
    samples: list[int] = []
    for iteration in range(warmup + count):
        started = time.perf_counter_ns()
        machine.flip()
        if iteration >= warmup:
            samples.append(time.perf_counter_ns() - started)
    return samples


def print_round_trip(samples: dict[str, list[int]]) -> None:
    count = len(samples["StartDataset"])
    width = max(map(len, samples)) + 2
    print(f"(a) round trip over Tango, {count} interleaved repetitions (microseconds)")
    print(f"{'call':<{width}}{'median':>10}{'p90':>10}")
    for name, values in samples.items():
        print(f"{name:<{width}}{ns_median(values) / 1e3:10.0f}{ns_p90(values) / 1e3:10.0f}")
    pair = ns_median(samples["StartDataset"]) + ns_median(samples["EndDataset"])
    headline = pair / (2 * ns_median(samples[SAME_FLOOR_CALL]))
    print(
        f"HEADLINE ratio (StartDataset+EndDataset)/(2 x {SAME_FLOOR_CALL}): {headline:5.2f}  "
        f"(target <= {TARGET_RATIO}: {'meets' if headline <= TARGET_RATIO else 'misses'})"
    )
    for floor in (
        "MetadataManager State",
        "MetadataManager read metadataFile",
        "BenchFloor Nothing",
    ):
        ratio = pair / (2 * ns_median(samples[floor]))
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        print(
            f"ratio (StartDataset+EndDataset)/(2 x {floor}): {ratio:5.2f}  "
            f"(target <= {TARGET_RATIO}: {verdict})"
        )


def file_system(path: Path) -> str:
    """The type of the file system holding `path`, as stat -f names it."""
    result = subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def print_references(
    round_trip: dict[str, list[int]], flushes: list[int], transitions: list[int], state: Path
) -> None:
    """The disk flush and the chart library, against the same-server floor."""
    floor = ns_median(round_trip[SAME_FLOOR_CALL])
    flush = ns_median(flushes)
    print(
        f"append {FSYNC_BYTES} B + os.fdatasync in the state directory (the outbox's file "
        f"system, {file_system(state)}), {len(flushes)} times: median {flush / 1e3:.0f} us, "
        f"p90 {ns_p90(flushes) / 1e3:.0f} us"
    )
    print(
        f"durable lower bound of the ratio: (2 x same-server floor + fdatasync) / "
        f"(2 x same-server floor) = {(2 * floor + flush) / (2 * floor):5.2f}"
    )
    print(
        "  a durable EndDataset costs at least one round trip plus one disk flush; this is "
        "the lowest ratio any implementation that flushes the outbox before EndDataset "
        "returns can reach on this disk"
    )
    ours = ns_median(round_trip["StartDataset"]) + ns_median(round_trip["EndDataset"])
    print(
        f"(StartDataset+EndDataset) / (2 x same-server floor + fdatasync) = "
        f"{ours / (2 * floor + flush):5.2f}  (1.0 would be a server doing nothing but the flush)"
    )
    print(
        f"bare python-statemachine transition (two states, one event), in this process: "
        f"median {ns_median(transitions) / 1e3:.1f} us, p90 {ns_p90(transitions) / 1e3:.1f} us"
        f" over {len(transitions)}"
    )


@dataclass
class Figures:
    """The figures of issue 11, measured in this run, printed together at the end."""

    floor_us: float = 0.0
    """datasetName + StartDataset + EndDataset on the do-nothing device in its own server."""
    fdatasync_us: float = 0.0
    """One fdatasync of a preallocated block on the outbox's file system."""
    file_system: str = ""
    ours_us: float = 0.0
    """The same three calls on the MetadataManager."""
    memory_kib: list[tuple[int, int, int]] = field(default_factory=list)
    """(datasets, MetadataManager RSS, do-nothing server RSS) at each reading."""
    start_to_ping: dict[str, list[float]] = field(default_factory=dict)

    @property
    def bound(self) -> float:
        return (self.floor_us + self.fdatasync_us) / self.floor_us

    def cycle_lines(self) -> list[str]:
        ours_ratio = self.ours_us / self.floor_us
        verdict = "meets" if ours_ratio / self.bound <= TARGET_RATIO else "misses"
        return [
            f"floor: {CYCLE} on a do-nothing device in its own server: {self.floor_us:.0f} us",
            f"one fdatasync of a preallocated {BLOCK_BYTES} B block on the outbox's file system "
            f"({self.file_system}): {self.fdatasync_us:.0f} us",
            f"durable bound = (floor + fdatasync) / floor = ({self.floor_us:.0f} + "
            f"{self.fdatasync_us:.0f}) / {self.floor_us:.0f} = {self.bound:.2f}",
            f"ours: {CYCLE} on the MetadataManager: {self.ours_us:.0f} us = "
            f"{ours_ratio:.2f} x floor",
            f"ours / durable bound = {ours_ratio:.2f} / {self.bound:.2f} = "
            f"{ours_ratio / self.bound:.2f}  (target <= {TARGET_RATIO}: {verdict})",
        ]

    def memory_lines(self) -> list[str]:
        lines = []
        for datasets, manager, floor in self.memory_kib:
            ratio = manager / floor
            verdict = "meets" if ratio <= MEMORY_TARGET else "misses"
            lines.append(
                f"resident memory after {datasets} datasets: MetadataManager server "
                f"{manager / 1024:.1f} MiB, do-nothing pytango server {floor / 1024:.1f} MiB: "
                f"{ratio:.2f}x  (target <= {MEMORY_TARGET}: {verdict})"
            )
        return lines

    def start_lines(self) -> list[str]:
        lines = []
        for kind, seconds in self.start_to_ping.items():
            verdict = "meets" if max(seconds) <= START_TARGET_S else "misses"
            lines.append(
                f"process start to answering a ping, {kind}, {len(seconds)} starts: median "
                f"{statistics.median(seconds):.2f} s, max {max(seconds):.2f} s"
                + (
                    f"  (target <= {START_TARGET_S:.0f} s: {verdict})"
                    if kind == "MetadataManager"
                    else ""
                )
            )
        return lines

    def print(self) -> None:
        print("\n==== issue 11 figures, all measured in this run ====")
        for line in [*self.cycle_lines(), *self.memory_lines(), *self.start_lines()]:
            print(f"  {line}")


def print_cycle(
    round_trip: dict[str, list[int]], alone: list[int], state: Path, figures: Figures
) -> None:
    """The durable bound of the dataset cycle: floor, one fdatasync, ours.

    The fdatasync is the cheaper of two medians: timed in the loop beside the calls (same
    load, but right after the server's own flush) and back to back after it. The cheaper
    one makes the stricter bound: load never loosens the target.
    """
    figures.floor_us = ns_median(round_trip[FLOOR_CYCLE]) / 1e3
    figures.ours_us = ns_median(round_trip[OURS_CYCLE]) / 1e3
    interleaved = round_trip[BLOCK_FLUSH]
    figures.fdatasync_us = min(ns_median(interleaved), ns_median(alone)) / 1e3
    figures.file_system = file_system(state)
    print(
        f"\n(a') the dataset cycle ({CYCLE}), medians of {len(round_trip[FLOOR_CYCLE])} "
        f"interleaved cycles; the block fdatasync in the loop: median "
        f"{ns_median(interleaved) / 1e3:.0f} us (p90 {ns_p90(interleaved) / 1e3:.0f}), "
        f"back to back after it: median {ns_median(alone) / 1e3:.0f} us "
        f"(p90 {ns_p90(alone) / 1e3:.0f}); the bound takes the cheaper"
    )
    for line in figures.cycle_lines():
        print(f"  {line}")


def print_memory(rows: list[Checkpoint], outbox_count: int) -> None:
    if len(rows) < 2:
        return
    first, last = rows[0], rows[-1]
    for name, values in (
        ("MetaExperiment", [row.meta_kib for row in rows]),
        ("MetadataManager", [row.manager_kib for row in rows]),
    ):
        growth = values[-1] - values[0]
        steps = [b - a for a, b in itertools.pairwise(values)]
        print(
            f"{name:<16} RSS {values[0] / 1024:6.1f} MiB after {first.datasets} datasets, "
            f"{values[-1] / 1024:6.1f} MiB after {last.datasets}: growth {growth:+d} KiB "
            f"({100 * growth / values[0]:+.1f} %, "
            f"{growth / max(1, last.datasets - first.datasets) * 1000:+.0f} KiB per 1000 "
            f"datasets; steps {min(steps):+d}..{max(steps):+d} KiB)  (target: no growth)"
        )
    print(
        f"outbox on disk: {last.outbox_bytes / 1e6:.1f} MB with {outbox_count} undelivered "
        f"messages in the MetadataManager's outbox  -- disk, not RSS"
    )
    print(
        f"EndDataset median {first.end_us:.0f} us over the first {first.datasets} datasets, "
        f"{last.end_us:.0f} us over the last {last.datasets - rows[-2].datasets}"
    )


def print_big(big: BigDataset) -> None:
    writes = big.writes
    window = min(BIG_WINDOW, max(1, len(writes) // 2))
    first, last = writes[:window], writes[-window:]
    print(f"{'lastDataFile write':<24}{'median us':>12}{'p90 us':>10}{'max us':>10}")
    for label, values in (
        (f"first {window}", first),
        (f"last {window}", last),
        (f"all {len(writes)}", writes),
    ):
        print(
            f"{label:<24}{ns_median(values) / 1e3:12.0f}{ns_p90(values) / 1e3:10.0f}"
            f"{max(values) / 1e3:10.0f}"
        )
    print(
        f"ratio last/first: median {ns_median(last) / ns_median(first):5.2f}, "
        f"p90 {ns_p90(last) / ns_p90(first):5.2f}  (near 1.0: the cost per file does not "
        "grow with the dataset)"
    )
    print(f"EndDataset of the {len(writes)}-file dataset: {big.end_ns / 1e6:.1f} ms")
    if big.files_in_xml is None:
        print(f"registered dataset: no new XML copy in metadataFile ({big.xml_path!r})")
    else:
        verdict = "all" if big.files_in_xml == len(writes) else "NOT all"
        print(
            f"registered dataset holds {big.files_in_xml} files ({XML_FILE_TAG} in "
            f"{big.xml_path}): {verdict} of the {len(writes)} written"
        )
    before, after = big.manager_kib
    print(
        f"MetadataManager RSS {before / 1024:.1f} MiB before StartDataset, "
        f"{after / 1024:.1f} MiB after EndDataset ({after - before:+d} KiB); "
        f"StartDataset to EndDataset {big.seconds:.1f} s"
    )


def _frame_name(frame: str) -> str:
    """'Class.method (path/to/file.py:12)' -> 'Class.method', builtins keep their file."""
    function, _, where = frame.partition(" (")
    if function.startswith("<") or "." not in function:
        return f"{function} ({where.rpartition('/')[2].rsplit(':', 1)[0]})"
    return function


def summarize_spy(path: Path, top: int = 18) -> None:
    """Where the MetadataManager's command threads spend their time, from py-spy's stacks.

    Only the samples inside the device's `event` (every command and write goes through
    it) count; a function's share is the part of those samples it is on the stack for.
    """
    if not path.exists():
        print("  py-spy wrote nothing: see py-spy.log")
        return
    inclusive: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        names = [_frame_name(frame) for frame in stack.split(";")]
        inside = [i for i, name in enumerate(names) if name == "MetadataManager.event"]
        if not inside or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        below = names[inside[0] :]
        for name in set(below):
            inclusive[name] = inclusive.get(name, 0) + count
        leaves[below[-1]] = leaves.get(below[-1], 0) + count
    print(f"  py-spy: {total} samples inside MetadataManager.event (5 ms each, waits included)")
    print("  inclusive share (on the stack):")
    for name, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        print(f"    {100 * count / max(1, total):5.1f} %  {name}")
    print("  own share (leaf function):")
    for name, count in sorted(leaves.items(), key=lambda item: -item[1])[: top // 2]:
        print(f"    {100 * count / max(1, total):5.1f} %  {name}")


def report_stalls(bench: Bench) -> None:
    """Calls that waited for seconds, and server threads that died, from the server logs."""
    print(
        f"\nstalled datasets (a call over {STALL_S} s): {len(bench.stalls)}"
        + (f" at datasets {bench.stalls[:10]}" if bench.stalls else "")
    )
    print(f"follower found OFF in the middle of a session: {len(bench.spurious_off)} time(s)")
    for at, status in bench.spurious_off[:5]:
        print(f"  before dataset {at + 1}: {status}")
    for process in bench.processes:
        text = process.log.read_text(errors="replace") if process.log.exists() else ""
        died = text.count("Exception in thread")
        monitor = text.count("not able to acquire serialization monitor")
        if died or monitor:
            print(
                f"  {process.name} log: {died} thread(s) died, {monitor} serialization-monitor "
                f"timeout(s): see {process.log}"
            )


def print_disk(outbox: Path) -> None:
    """Per device: the sqlite outbox (with its WAL) and any other files kept beside it."""
    for device in sorted(outbox.iterdir()):
        files = [item for item in device.rglob("*") if item.is_file()]
        sqlite = [item for item in files if item.name.startswith("outbox.sqlite3")]
        others = [item for item in files if item not in sqlite]
        print(
            f"  {device.name}: sqlite {sum(f.stat().st_size for f in sqlite) / 1e6:.1f} MB"
            + (
                f", {len(others)} other files {sum(f.stat().st_size for f in others) / 1e6:.1f}"
                f" MB (e.g. {others[0].relative_to(device)})"
                if others
                else ""
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=10_000, help="for (b); 0 skips (b)")
    parser.add_argument("--round-trips", type=int, default=500, help="for (a)")
    parser.add_argument(
        "--big-files", type=int, default=10_000, help="files of (d)'s dataset; 0 skips (d)"
    )
    parser.add_argument("--profile", action="store_true", help="also run (c)")
    parser.add_argument("--profile-datasets", type=int, default=400)
    parser.add_argument(
        "--py-spy", type=int, default=0, metavar="SECONDS", help="sample the server in (b)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--floor-server", metavar="INSTANCE", help=argparse.SUPPRESS)
    parser.add_argument("--manager-server", metavar="INSTANCE", help=argparse.SUPPRESS)
    parser.add_argument("--profiled-manager", metavar="INSTANCE", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.floor_server:
        serve_floor(options.floor_server)
        return
    if options.manager_server:
        serve_manager(options.manager_server)
        return
    if options.profiled_manager:
        serve_profiled_manager(options.profiled_manager, options.profile_out)
        return

    root = Path(tempfile.mkdtemp(prefix="icat-bench-tango-"))
    bench = Bench(root)
    bench.spy_seconds = options.py_spy
    started = time.monotonic()
    try:
        bench.start()
        print(
            f"servers: MetaExperiment pid {bench.meta.pid}, MetadataManager pid "
            f"{bench.manager.pid} (with {SAME_SERVER_FLOOR}), BenchFloor pid "
            f"{bench.floor.pid}; state in {root}; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        figures = Figures()
        round_trip = bench.round_trip(options.round_trips)
        print_round_trip(round_trip)
        print_references(round_trip, bench.fdatasync(), transition_samples(), bench.state)
        print_cycle(round_trip, bench.block_flushes(), bench.state, figures)
        figures.memory_kib.append((bench.datasets, bench.manager.rss_kib(), bench.floor.rss_kib()))
        if options.datasets:
            print(
                f"\n(b) memory: datasets up to {options.datasets} (counting (a)'s), "
                "proposal and sample new every 100, one file and one parameter each",
                flush=True,
            )
            rows = bench.memory(options.datasets)
            figures.memory_kib.append((rows[-1].datasets, rows[-1].manager_kib, rows[-1].floor_kib))
            undelivered = int(bench.manager_proxy.read_attribute("undeliveredCount").value)
            print_memory(rows, undelivered)
            print_disk(bench.state / "outbox")
        if options.big_files > 0:
            print(
                f"\n(d) one big dataset: StartDataset, {options.big_files} lastDataFile "
                "writes, EndDataset",
                flush=True,
            )
            print_big(bench.big_dataset(options.big_files))
        print(f"\n(e) process start to answering a ping, {PING_STARTS} starts each", flush=True)
        figures.start_to_ping = bench.start_to_ping()
        for line in figures.start_lines():
            print(f"  {line}")
        if options.profile:
            bench.profile(options.profile_datasets)
        figures.print()
    finally:
        bench.stop()
        report_stalls(bench)
        print(f"\ntotal {time.monotonic() - started:.0f} s; all processes stopped by PID")
        if not options.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
