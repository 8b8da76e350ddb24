"""`icat-servers demo`: a whole beamline session on the embedded defaults, narrated.

Embedded Tango database, `examples/id00.yml` registered, a local ActiveMQ on the port the
example names, both servers started from their console scripts, then the calls BLISS makes
for two datasets and a logbook message, with the MetadataManager's state after each call.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import tango

from adapters import registration
from adapters.activemq import ActiveMQ, port_accepts
from adapters.embedded_db import EmbeddedDatabase, default_state_dir
from adapters.processes import start_server

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "id00.yml"
BROKER_PORT = 61613
"""The example's queueURLs is localhost:61613."""
META = "id00/metaexp/test"
MANAGER = "id00/metadata/test"


def start(executable: str, device: str, log: Path) -> subprocess.Popen[bytes]:
    command = shutil.which(executable) or str(Path(sys.executable).parent / executable)
    return start_server([command, "icatservers"], [device], log)


def show(manager: tango.DeviceProxy, call: str) -> None:
    status = manager.status().splitlines()
    print(f"  {call:<44} -> {manager.state()!s:<8} {status[0]}")


def session(meta: tango.DeviceProxy, manager: tango.DeviceProxy) -> None:
    meta.proposal = ""
    show(manager, "proposal = '' (a new session)")
    meta.proposal = "hg123"
    show(manager, "proposal = 'hg123'")
    meta.sample = "lysozyme"
    show(manager, "sample = 'lysozyme'")
    meta.dataRoot = "/data/visitor/hg123/id00/20261126"
    show(manager, "dataRoot = '/data/visitor/hg123/id00/...'")
    for number in (1, 2):
        name = f"lysozyme_{number:04d}"
        manager.datasetName = name
        show(manager, f"datasetName = {name!r}")
        manager.StartDataset()
        show(manager, "StartDataset()")
        manager.SetParameters(json.dumps({"Sample_description": f"crystal {number}"}))
        manager.InstrumentSlitPrimary_horizontal_gap = "0.5"
        for scan in (1, 2):
            manager.lastDataFile = f"/data/visitor/hg123/id00/20261126/{name}/scan{scan:04d}.h5"
        show(manager, "SetParameters(...), lastDataFile x2")
        manager.EndDataset()
        show(manager, "EndDataset()")
    manager.userComment("Demo session: two lysozyme datasets")
    show(manager, "userComment(...)")
    deadline = time.monotonic() + 15
    while manager.undeliveredCount > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.2)
    print("\nMetadataManager Status:\n  " + "\n  ".join(manager.status().splitlines()))
    print(
        f"undeliveredCount = {manager.undeliveredCount}, "
        f"brokerConnected = {manager.brokerConnected}"
    )


def run(state_dir: Path | None = None) -> int:
    if not EXAMPLE.is_file():
        print(
            f"icat-servers demo: {EXAMPLE} is not there: the example ships with the "
            "repository, not the package; run scripts/demo from a checkout",
            file=sys.stderr,
        )
        return 2
    state = state_dir or default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    database = None
    if not os.environ.get("TANGO_HOST"):
        database = EmbeddedDatabase(state)
        os.environ["TANGO_HOST"] = database.start()
    print(f"Tango database: TANGO_HOST={os.environ['TANGO_HOST']}")
    plan = registration.plan([EXAMPLE])
    db = tango.Database()
    todo = registration.changes(plan, db)
    registration.apply(todo, db)
    print(f"registered {EXAMPLE.name}: {len(todo)} change(s)")
    os.environ.setdefault("ICAT_SERVERS_STATE", str(state))
    broker = None
    if not port_accepts(BROKER_PORT):
        broker = ActiveMQ(state / "activemq", BROKER_PORT)
        broker.start()
        print(f"ActiveMQ: started on 127.0.0.1:{BROKER_PORT}")
    else:
        print(f"ActiveMQ: something already listens on {BROKER_PORT}; using it")
    processes = [
        start("MetaExperiment", META, state / "MetaExperiment.log"),
        start("MetadataManager", MANAGER, state / "MetadataManager.log"),
    ]
    try:
        meta, manager = tango.DeviceProxy(META), tango.DeviceProxy(MANAGER)
        deadline = time.monotonic() + 10
        while manager.state() == tango.DevState.OFF and "reached" in manager.status():
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        print(f"servers up: {META} {meta.state()}, {MANAGER} {manager.state()}\n")
        session(meta, manager)
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
        if broker is not None:
            broker.stop()
        if database is not None:
            database.stop()
    print(f"\nlogs and outboxes under {state}")
    return 0
