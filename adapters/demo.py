"""`icat-servers demo`: a whole beamline session on a stack of its own, narrated.

Everything the demo uses is its own, in `$ICAT_SERVERS_STATE/demo` (emptied at each run
unless --keep): a Tango database, a local ActiveMQ on a free port, devices named
`id00/metaexp/demo` and `id00/metadata/demo` registered from `examples/id00.yml`, and
both servers. It is brought up and down with `icat-servers up`'s code, so it stops, by
PID, only what it started; TANGO_HOST, the user's embedded database and servers are
never looked at. The session runs the calls BLISS makes for two datasets and a logbook
message, showing the MetadataManager's state after each, and ends by reading the
broker's queue back: where the datasets went.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import tango
import yaml

from icat_servers.adapters import operator_cli, stack
from icat_servers.adapters.activemq import free_port
from icat_servers.adapters.embedded_db import default_state_dir

EXAMPLE = stack.EXAMPLE
META = "id00/metaexp/demo"
MANAGER = "id00/metadata/demo"
INSTANCE = "demo"


def state_dir() -> Path:
    """The demo's own state directory, beside (never in place of) the user's."""
    return default_state_dir() / "demo"


def registration(example: Path, broker_port: int) -> list[dict[str, Any]]:
    """The example, with the demo's device names, server instance and broker, and no ICAT+."""
    entries: list[dict[str, Any]] = yaml.safe_load(example.read_text())
    for entry in entries:
        properties = entry.get("properties") or {}
        if "queueURLs" in properties:
            properties["queueURLs"] = [f"localhost:{broker_port}"]
        # no ICAT+ serves the example's URL: the demo configures none, and says so
        properties.pop("icatplus_server", None)
        properties.pop("API_KEY", None)
        if "server" in entry:
            entry["personal_name"] = INSTANCE
            for device in entry["device"]:
                device["tango_name"] = META if device["class"] == "MetaExperiment" else MANAGER
                if "metaExperimentDevice" in (device.get("properties") or {}):
                    device["properties"]["metaExperimentDevice"] = META
    return entries


def destination(entries: list[dict[str, Any]]) -> str:
    """The queue the registration names (a bare name is a /queue/)."""
    for entry in entries:
        name = str((entry.get("properties") or {}).get("queueName", ""))
        if name:
            return name if name.startswith("/") else f"/queue/{name}"
    return "/queue/icatIngest"


def show(manager: tango.DeviceProxy, call: str) -> None:
    status = manager.status().splitlines()
    print(f"  {call:<44} -> {manager.state()!s:<8} {status[0]}")


def session(meta: tango.DeviceProxy, manager: tango.DeviceProxy, data_root: Path) -> None:
    waiting = manager.undeliveredCount  # logbook messages a kept (--keep) outbox still holds
    meta.proposal = ""
    show(manager, "proposal = '' (a new session)")
    meta.proposal = "hg123"
    show(manager, "proposal = 'hg123'")
    meta.sample = "lysozyme"
    show(manager, "sample = 'lysozyme'")
    meta.dataRoot = str(data_root)
    show(manager, f"dataRoot = '.../{data_root.name}'")
    for number in (1, 2):
        name = f"lysozyme_{number:04d}"
        manager.datasetName = name
        show(manager, f"datasetName = {name!r}")
        manager.StartDataset()
        show(manager, "StartDataset()")
        manager.SetParameters(json.dumps({"Sample_description": f"crystal {number}"}))
        manager.InstrumentSlitPrimary_horizontal_gap = "0.5"
        for scan in (1, 2):
            manager.lastDataFile = str(data_root / name / f"scan{scan:04d}.h5")
        show(manager, "SetParameters(...), lastDataFile x2")
        manager.EndDataset()
        show(manager, "EndDataset()")
    manager.userComment("Demo session: two lysozyme datasets")
    show(manager, "userComment(...)")
    print(
        "  (the demo configures no ICAT+: the logbook message stays in the device's outbox, "
        "which the next demo empties)"
    )
    deadline = time.monotonic() + 15
    while manager.undeliveredCount > waiting + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    print("\nMetadataManager Status:\n  " + "\n  ".join(manager.status().splitlines()))
    print(
        f"undeliveredCount = {manager.undeliveredCount}, "
        f"brokerConnected = {manager.brokerConnected}"
    )


def browse(port: int, destination: str, timeout: float = 10.0) -> list[tuple[dict[str, str], str]]:
    """The messages waiting on a queue, read without consuming them (STOMP `browser`)."""
    import queue

    import stomp

    found: queue.Queue[tuple[dict[str, str], str]] = queue.Queue()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: Any) -> None:
            found.put((dict(frame.headers), frame.body))

    connection = stomp.Connection12([("127.0.0.1", port)])
    connection.set_listener("browse", Listener())
    connection.connect(wait=True)
    messages: list[tuple[dict[str, str], str]] = []
    try:
        connection.subscribe(destination, id="browse", ack="auto", headers={"browser": "true"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                headers, body = found.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if headers.get("browser") == "end":
                break
            messages.append((headers, body))
    finally:
        connection.disconnect()
    return messages


def summary(body: str) -> str:
    """One line for an ICAT message: what it registers."""
    if "<tns:dataset" in body:
        name = re.search(r"<tns:name>([^<]*)</tns:name>", body)
        complete = re.search(r'complete="(\w+)"', body)
        files = body.count("<tns:datafile")
        state = complete.group(1) if complete else "?"
        return f"dataset {name.group(1) if name else '?'} (complete={state}, {files} files)"
    if "<tns:investigation" in body:
        experiment = re.search(r"<tns:experiment>([^<]*)</tns:experiment>", body)
        return f"investigation start {experiment.group(1) if experiment else '?'}"
    return f"{len(body)} bytes"


def run(keep: bool = False) -> int:
    if not EXAMPLE.is_file():
        print(
            f"icat-servers demo: {EXAMPLE} is not there: the example ships with the "
            "package, so this installation is incomplete; reinstall icat-servers",
            file=sys.stderr,
        )
        return 2
    root = state_dir()
    if (root / stack.UP_FILE).exists():
        print("an earlier demo left processes recorded; stopping those (and only those):")
        stack.down(state_dir=root)
    if root.exists() and not keep:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    broker_port = free_port()
    plan = root / "demo.yml"
    entries = registration(EXAMPLE, broker_port)
    plan.write_text(yaml.safe_dump(entries, sort_keys=False))
    print(f"The demo's own stack, in {root} (your TANGO_HOST and servers are not used):")
    try:
        database = stack.up([plan], state_dir=root, broker=True, say=sys.stdout)
        tango_host = database.tango_host
        meta = tango.DeviceProxy(f"tango://{tango_host}/{META}")
        manager = tango.DeviceProxy(f"tango://{tango_host}/{MANAGER}")
        print(f"servers up: {META} {meta.state()}, {MANAGER} {manager.state()}\n")
        today = dt.date.today().strftime("%Y%m%d")
        session(meta, manager, root / "data" / "visitor" / "hg123" / "id00" / today)
        queue_name = destination(entries)
        print(f"\nWhere the datasets went: the broker's {queue_name} on localhost:{broker_port}")
        for headers, body in browse(broker_port, queue_name):
            print(f"  {headers.get('icat-message-id', '?')[:12]}  {summary(body)}")
        print(f"\n$ icat-servers status    # with TANGO_HOST={tango_host}")
        operator_cli.show_status(
            operator_cli.status_round(tango_host),
            as_json=False,
            colours=sys.stdout.isatty(),
            out=sys.stdout,
        )
    finally:
        print("\nstopping the demo's stack:")
        stack.down(state_dir=root)
    print(
        f"\nits logs, outboxes and database stay in {root} until the next demo "
        "(--keep keeps them then too)"
    )
    return 0
