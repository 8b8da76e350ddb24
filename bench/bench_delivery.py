"""Datasets through the Tango devices to a real ActiveMQ: rates, ratios and latency, one run.

    /work/venv/bin/python bench/bench_delivery.py [--datasets N] [--rounds R]

Starts its own ActiveMQ, embedded Tango database and servers (stopped by PID), then:

(a) ours: N datasets through Tango calls (write datasetName, StartDataset, SetParameters,
    3 x lastDataFile, EndDataset) -> outbox -> STOMP with receipts -> ActiveMQ, each block
    timed until the broker confirmed all (the outbox is empty);
(c) floor: the same Tango call sequence against a do-nothing device (this file, run with
    `--floor-server`, in its own process), target ours/floor >= 0.7;
(e) ours, outbox only: the same calls against a second MetadataManager device of the same
    server process, following the same MetaExperiment, without `queueURLs` and ICAT+
    settings: every message stays in its durable outbox, nothing is delivered; timed like
    the floor (Tango calls alone), it separates the server's own cost from the broker's.
    (a), (c) and (e) run interleaved in R rounds (default 5): each round a floor, an ours
    and an outbox-only block of N/R datasets, the order rotating from round to round, so
    that the machine's drift falls on all alike; rates are total datasets / total time of
    each kind, and the ratio of each round is shown too (its spread);
(b) pyicat-plus: the same datasets sent with `IcatClient.store_dataset` to the same broker
    (fire and forget: it does not wait for the broker), target ours >= 10x; floor /
    pyicat-plus shows what the sequential 7-call client allows at best;
(d) latency from EndDataset returning to the message reaching a consumer of the queue
    (after the broker stored it), one dataset at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tango  # noqa: E402
from tango.server import Device, attribute, command, run  # noqa: E402

BEAMLINE = "id00"
PROPOSAL = "ab1234"
SAMPLE = "lysozyme"
PARAMETERS = {
    "Sample_description": "tetragonal crystal",
    "InstrumentSlitPrimary_horizontal_gap": "0.25",
    "scanType": "ascan",
}
FILES = 3
META, MANAGER, FLOOR = "bench/metaexp/1", "bench/metadata/1", "bench/floor/1"
OUTBOX_ONLY = "bench/metadata/2"
"""A second MetadataManager device of the same server: no delivery settings."""
QUEUE_OURS, QUEUE_PYICAT = "bench.ours", "bench.pyicat"
NAME = re.compile(r"<tns:name>([^<]*)</tns:name>")


class FloorDevice(Device):  # type: ignore[misc]
    """The same attributes and commands as the MetadataManager, doing nothing."""

    def init_device(self) -> None:
        super().init_device()
        self.name_ = ""
        self.file_ = ""

    @attribute(dtype=str, access=tango.AttrWriteType.READ_WRITE)
    def datasetName(self) -> str:
        return self.name_

    @datasetName.write  # type: ignore[no-redef]
    def datasetName(self, value: str) -> None:
        self.name_ = value

    @attribute(dtype=str, access=tango.AttrWriteType.READ_WRITE)
    def lastDataFile(self) -> str:
        return self.file_

    @lastDataFile.write  # type: ignore[no-redef]
    def lastDataFile(self, value: str) -> None:
        self.file_ = value

    @command  # type: ignore[untyped-decorator]
    def StartDataset(self) -> None:
        pass

    @command  # type: ignore[untyped-decorator]
    def EndDataset(self) -> None:
        pass

    @command(dtype_in=str)  # type: ignore[untyped-decorator]
    def SetParameters(self, text: str) -> None:
        pass


Timings = dict[str, list[float]]


@dataclass(frozen=True)
class Block:
    """One block of datasets: how many, seconds in all, seconds of the Tango calls alone."""

    datasets: int
    seconds: float
    calls_seconds: float

    @property
    def rate(self) -> float:
        return self.datasets / self.seconds


@dataclass(frozen=True)
class Round:
    """The three blocks of one interleaved round."""

    floor: Block
    ours: Block
    outbox_only: Block


KINDS = ("floor", "ours", "outbox only")


def rotated(index: int) -> tuple[str, ...]:
    """The order of the blocks in round `index`: KINDS rotated, so none always goes first."""
    shift = index % len(KINDS)
    return KINDS[shift:] + KINDS[:shift]


def total_rate(blocks: list[Block], calls_only: bool = False) -> float:
    """Total datasets / total time over the blocks."""
    seconds = sum(block.calls_seconds if calls_only else block.seconds for block in blocks)
    return sum(block.datasets for block in blocks) / seconds


def one_dataset(proxy: tango.DeviceProxy, name: str, timings: Timings | None = None) -> float:
    """The client's call sequence; returns time.time() when EndDataset returned.

    With `timings`, each call's duration is appended under its name.
    """
    calls: list[tuple[str, Callable[[], object]]] = [
        ("write datasetName", lambda: proxy.write_attribute("datasetName", name)),
        ("StartDataset", lambda: proxy.command_inout("StartDataset")),
        ("SetParameters", lambda: proxy.command_inout("SetParameters", json.dumps(PARAMETERS))),
    ]
    calls += [
        ("write lastDataFile", partial(proxy.write_attribute, "lastDataFile", path))
        for path in (f"/data/visitor/{PROPOSAL}/{name}/f{i}.h5" for i in range(FILES))
    ]
    calls.append(("EndDataset", lambda: proxy.command_inout("EndDataset")))
    for what, call in calls:
        start = time.perf_counter()
        call()
        if timings is not None:
            timings.setdefault(what, []).append(time.perf_counter() - start)
    return time.time()


def sequence_rate(
    proxy: tango.DeviceProxy, prefix: str, count: int, timings: Timings | None = None
) -> float:
    start = time.perf_counter()
    for i in range(count):
        one_dataset(proxy, f"{prefix}_{i:05d}", timings)
    return count / (time.perf_counter() - start)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


class Bench:
    def __init__(self, workdir: Path) -> None:
        from icat_servers.adapters.embedded_db import EmbeddedDatabase
        from tests.services.activemq import ActiveMQ, free_port

        self.workdir = workdir
        self.broker = ActiveMQ(workdir / "activemq", free_port())
        self.database = EmbeddedDatabase(workdir / "tango_db")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.state = workdir / "state"

    def outbox(self, device: str) -> Path:
        return self.state / "outbox" / device.replace("/", "_") / "outbox.sqlite3"

    # -- services ------------------------------------------------------------------

    def start(self) -> None:
        from tests.services.servers import register

        self.broker.start()
        tango_host = self.database.start()
        os.environ["TANGO_HOST"] = tango_host
        delivery = {
            "queueURLs": [self.broker.url],
            "queueName": [QUEUE_OURS],
            "icatplus_server": ["http://127.0.0.1:9"],
            "API_KEY": ["bench"],
        }
        register(
            tango_host,
            "MetaExperiment/bench",
            "MetaExperiment",
            {META: {"beamlineID": [BEAMLINE], **delivery}},
        )
        manager_properties = {
            "beamlineID": [BEAMLINE],
            "metaExperimentDevice": [META],
            "parameters": ["Sample_description", "InstrumentSlitPrimary_horizontal_gap"],
        }
        # Device properties, each device its own: the delivery settings of MANAGER do not
        # reach OUTBOX_ONLY (no class properties are written).
        register(
            tango_host,
            "MetadataManager/bench",
            "MetadataManager",
            {MANAGER: {**manager_properties, **delivery}, OUTBOX_ONLY: manager_properties},
        )
        register(tango_host, "FloorDevice/bench", "FloorDevice", {FLOOR: {}})
        environment = {**os.environ, "ICAT_SERVERS_STATE": str(self.state)}
        bin_dir = Path(sys.executable).parent
        for command_line, devices in (
            ([str(bin_dir / "MetaExperiment"), "bench"], (META,)),
            ([str(bin_dir / "MetadataManager"), "bench"], (MANAGER, OUTBOX_ONLY)),
            (
                [sys.executable, str(Path(__file__).resolve()), "--floor-server", "bench"],
                (FLOOR,),
            ),
        ):
            log = (self.workdir / f"{devices[0].replace('/', '_')}.log").open("ab")
            process = subprocess.Popen(
                command_line,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.processes.append(process)
            for device in devices:
                wait_for(partial(self._answers, device), 60, f"{device} to start")
        meta = tango.DeviceProxy(META)
        wait_for(
            lambda: {MANAGER, OUTBOX_ONLY} <= set(meta.followers or ()),
            30,
            "both MetadataManagers to follow",
        )
        meta.write_attribute("proposal", PROPOSAL)
        meta.write_attribute("sample", SAMPLE)
        for device in (MANAGER, OUTBOX_ONLY):
            proxy = tango.DeviceProxy(device)
            wait_for(partial(self._in_standby, proxy), 10, f"{device} in STANDBY")

    @staticmethod
    def _in_standby(proxy: tango.DeviceProxy) -> bool:
        return bool(proxy.state() == tango.DevState.STANDBY)

    @staticmethod
    def _answers(device: str) -> bool:
        try:
            tango.DeviceProxy(device).state()
        except tango.DevFailed:
            return False
        return True

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        self.database.stop()
        self.broker.kill()

    def undelivered(self, device: str = MANAGER) -> int:
        with sqlite3.connect(f"file:{self.outbox(device)}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # -- the figures ---------------------------------------------------------------

    def ours(self, proxy: tango.DeviceProxy, prefix: str, count: int, timings: Timings) -> Block:
        """One block: seconds until the broker confirmed all, and of the Tango calls alone."""
        start = time.perf_counter()
        for i in range(count):
            one_dataset(proxy, f"{prefix}_{i:05d}", timings)
        calls = time.perf_counter() - start
        wait_for(lambda: self.undelivered() == 0, 120, "the outbox to empty")
        return Block(count, time.perf_counter() - start, calls)

    def interleaved(self, datasets: int, rounds: int, timings: dict[str, Timings]) -> list[Round]:
        """The three blocks per round, in the order of KINDS rotated by the round's index.

        `timings` gets each kind's per-call durations under the kind's name.
        """
        proxies = {
            "floor": tango.DeviceProxy(FLOOR),
            "ours": tango.DeviceProxy(MANAGER),
            "outbox only": tango.DeviceProxy(OUTBOX_ONLY),
        }
        prefixes = {"floor": "floor", "ours": "ours", "outbox only": "outbox"}
        results: list[Round] = []
        for index in range(rounds):
            count = datasets // rounds + (1 if index < datasets % rounds else 0)
            blocks: dict[str, Block] = {}
            for kind in rotated(index):
                proxy, prefix = proxies[kind], f"{prefixes[kind]}_r{index}"
                kind_timings = timings.setdefault(kind, {})
                if kind == "ours":
                    blocks[kind] = self.ours(proxy, prefix, count, kind_timings)
                    continue
                start = time.perf_counter()
                for i in range(count):
                    one_dataset(proxy, f"{prefix}_{i:05d}", kind_timings)
                seconds = time.perf_counter() - start
                blocks[kind] = Block(count, seconds, seconds)
            results.append(Round(blocks["floor"], blocks["ours"], blocks["outbox only"]))
        return results

    def pyicat_plus(self, count: int) -> float:
        from pyicat_plus.client.main import IcatClient

        client = IcatClient(metadata_urls=[self.broker.url], metadata_queue=QUEUE_PYICAT)
        metadata = {"Sample_name": SAMPLE, **PARAMETERS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.store_dataset(BEAMLINE, PROPOSAL, "warmup", "/data/warmup", dict(metadata))
            start = time.perf_counter()
            for i in range(count):
                now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
                client.store_dataset(
                    beamline=BEAMLINE,
                    proposal=PROPOSAL,
                    dataset=f"pyicat_{i:05d}",
                    path=f"/data/visitor/{PROPOSAL}/pyicat_{i:05d}",
                    metadata={**metadata, "startDate": now, "endDate": now},
                )
            rate = count / (time.perf_counter() - start)
        client.disconnect()
        return rate

    def latency(self, count: int) -> list[float]:
        """EndDataset returned -> the message handed to a consumer, one dataset at a time."""
        import stomp

        arrivals: dict[str, float] = {}
        seen = threading.Event()

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_message(self, frame: stomp.utils.Frame) -> None:
                match = NAME.search(frame.body)
                if match is not None:
                    arrivals[match.group(1)] = time.time()
                seen.set()

        consumer = stomp.Connection12([(self.broker.host, self.broker.port)])
        consumer.set_listener("bench", Listener())
        consumer.connect(wait=True)
        consumer.subscribe(f"/queue/{QUEUE_OURS}", id="bench", ack="auto")
        while seen.wait(1.0):  # let the backlog of (a) go by
            seen.clear()
        proxy = tango.DeviceProxy(MANAGER)
        ended: dict[str, float] = {}
        for i in range(count):
            name = f"latency_{i:05d}"
            ended[name] = one_dataset(proxy, name)
            wait_for(partial(arrivals.__contains__, name), 30, f"{name} to arrive")
        consumer.disconnect()
        return [arrivals[name] - ended[name] for name in ended]


BLOCK_BYTES = 4096
DURABLE_TARGET = 0.75


def block_fdatasync(directory: Path, writes: int = 300, warmup: int = 10) -> list[float]:
    """Seconds per rewrite in place + fdatasync of one preallocated block in `directory`
    (the file's size never changes: only the data goes to disk)."""
    path = directory / "fdatasync.block"
    block = b"x" * (BLOCK_BYTES - 1) + b"\n"
    samples: list[float] = []
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(descriptor, 0, BLOCK_BYTES)
        os.pwrite(descriptor, block, 0)
        os.fsync(descriptor)
        for iteration in range(warmup + writes):
            started = time.perf_counter()
            os.pwrite(descriptor, block, 0)
            os.fdatasync(descriptor)
            if iteration >= warmup:
                samples.append(time.perf_counter() - started)
    finally:
        os.close(descriptor)
        path.unlink()
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=1000, help="for (a), (c) and (e) each")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved floor/ours/outbox-only rounds for (a), (c) and (e)",
    )
    parser.add_argument("--pyicat-datasets", type=int, default=300)
    parser.add_argument("--latency-datasets", type=int, default=300)
    parser.add_argument("--floor-server", metavar="INSTANCE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not 1 <= args.rounds <= args.datasets:
        parser.error("--rounds must be between 1 and --datasets")
    if args.floor_server:
        run((FloorDevice,), args=["FloorDevice", args.floor_server])
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench_delivery_"))
    bench = Bench(workdir)
    try:
        bench.start()
        for device in (FLOOR, MANAGER, OUTBOX_ONLY):
            sequence_rate(tango.DeviceProxy(device), "warm", 100)
        wait_for(lambda: bench.undelivered() == 0, 60, "the warm-up to be delivered")
        load = os.getloadavg()[0]
        timings: dict[str, Timings] = {}
        rounds = bench.interleaved(args.datasets, args.rounds, timings)
        kept = bench.undelivered(OUTBOX_ONLY)
        flush = statistics.median(block_fdatasync(bench.state))
        pyicat_rate = bench.pyicat_plus(args.pyicat_datasets)
        latencies = bench.latency(args.latency_datasets)
    finally:
        bench.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    floor_blocks = [one.floor for one in rounds]
    ours_blocks = [one.ours for one in rounds]
    outbox_blocks = [one.outbox_only for one in rounds]
    floor_rate = total_rate(floor_blocks)
    ours_rate = total_rate(ours_blocks)
    ours_calls = total_rate(ours_blocks, calls_only=True)
    outbox_rate = total_rate(outbox_blocks)
    per_round = [one.ours.rate / one.floor.rate for one in rounds]
    outbox_per_round = [one.outbox_only.rate / one.floor.rate for one in rounds]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the start")
    print(
        f"dataset = 7 Tango calls (datasetName, StartDataset, SetParameters of "
        f"{len(PARAMETERS)}, {FILES} x lastDataFile, EndDataset)"
    )
    print(
        f"(a)+(c)+(e) interleaved: {len(rounds)} rounds of a floor, an ours and an outbox-only"
        f" block ({', '.join(str(block.datasets) for block in ours_blocks)} datasets each), "
        "order rotating: "
        + "; ".join(
            f"r{index} " + ", ".join(rotated(index)) for index in range(min(len(rounds), 3))
        )
        + ("; ..." if len(rounds) > 3 else "")
    )
    print(
        f"(a) ours, Tango -> outbox -> ActiveMQ receipt, {sum(b.datasets for b in ours_blocks)}"
        f" datasets: {ours_rate:7.1f} /s end to end (Tango calls alone {ours_calls:.1f} /s)"
    )
    print(
        f"(b) pyicat-plus IcatClient.store_dataset, {args.pyicat_datasets} datasets: "
        f"{pyicat_rate:7.1f} /s (no broker confirmation)"
    )
    print(f"    ours / pyicat-plus = {ours_rate / pyicat_rate:.1f}x (target >= 10x)")
    print(f"    floor / pyicat-plus = {floor_rate / pyicat_rate:.1f}x")
    print(
        "    (when floor / pyicat-plus is below 10, the >= 10x pyicat-plus target is above "
        "what even a do-nothing device reaches with this sequential 7-call client)"
    )
    print(
        f"(c) floor: do-nothing device, same calls, {sum(b.datasets for b in floor_blocks)} "
        f"datasets: {floor_rate:7.1f} /s"
    )
    print(
        "    per round ours/floor: "
        + ", ".join(
            f"{ratio:.2f} ({one.ours.rate:.0f}/{one.floor.rate:.0f} /s)"
            for ratio, one in zip(per_round, rounds, strict=True)
        )
    )
    print(
        f"    ours / floor = {ours_rate / floor_rate:.2f} (target >= 0.7; per round "
        f"{min(per_round):.2f}..{max(per_round):.2f}; Tango calls alone "
        f"{ours_calls / floor_rate:.2f})"
    )
    durable_floor = 1 / (1 / floor_rate + flush)
    verdict = "meets" if ours_rate / durable_floor >= DURABLE_TARGET else "misses"
    print(
        f"    durable floor: the floor's sequence plus one fdatasync of a preallocated "
        f"{BLOCK_BYTES} B block on the outbox's file system ({flush * 1e6:.0f} us) = "
        f"{durable_floor:.1f} /s; ours / durable floor = {ours_rate / durable_floor:.2f} "
        f"(target >= {DURABLE_TARGET}: {verdict})"
    )
    print(
        f"(e) ours, outbox only: second MetadataManager device of the same server, no "
        f"delivery settings, {sum(b.datasets for b in outbox_blocks)} datasets: "
        f"{outbox_rate:7.1f} /s (Tango calls; {kept} messages kept in its outbox at the end)"
    )
    print(
        "    per round outbox only/floor: "
        + ", ".join(
            f"{ratio:.2f} ({one.outbox_only.rate:.0f}/{one.floor.rate:.0f} /s)"
            for ratio, one in zip(outbox_per_round, rounds, strict=True)
        )
    )
    print(
        f"    outbox only / floor = {outbox_rate / floor_rate:.2f} (per round "
        f"{min(outbox_per_round):.2f}..{max(outbox_per_round):.2f}); "
        f"ours / outbox only = {ours_rate / outbox_rate:.2f} (Tango calls alone "
        f"{ours_calls / outbox_rate:.2f})"
    )
    print("    median ms per call        ours  outbox only   floor")
    for what, times in timings["ours"].items():
        print(
            f"    {what:<22} {statistics.median(times) * 1e3:7.2f} "
            f"{statistics.median(timings['outbox only'][what]) * 1e3:12.2f} "
            f"{statistics.median(timings['floor'][what]) * 1e3:7.2f}"
        )
    print(
        f"(d) EndDataset returned -> consumer got it, {len(latencies)} datasets one at a "
        f"time: median {statistics.median(latencies) * 1e3:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1e3:.1f} ms, "
        f"max {max(latencies) * 1e3:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
