"""Faults met through the real devices: a server crash, a broker crash, a full disk.

Each test drives the devices with Tango calls, as BLISS does, and counts at the broker
what arrived against what the devices accepted. A registration the device accepted and
then lost is the worst bug of the project; a duplicate is allowed (at-least-once) and
counted.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import tango

from icat_servers.adapters.stomp_sender import MESSAGE_ID_HEADER
from tests.e2e_delivery.conftest import Beamline, unique_proposal, wait_delivered, wait_until
from tests.services.activemq import ActiveMQ, drain, free_port

pytestmark = pytest.mark.slow

DATASET_NAME = re.compile(r"<tns:dataset [^>]*>.*?<tns:name>([^<]*)</tns:name>")


def private_queue(what: str) -> str:
    return f"/queue/e2e.{what}.{uuid.uuid4().hex[:10]}"


def open_session(beamline: Beamline) -> None:
    beamline.meta.write_attribute("proposal", unique_proposal("fa"))
    beamline.meta.write_attribute("sample", "lysozyme")
    assert beamline.manager.state() == tango.DevState.STANDBY


def run_dataset(manager: tango.DeviceProxy, name: str, files: int = 1) -> float:
    """One dataset as BLISS makes it; returns how long EndDataset took (seconds)."""
    manager.write_attribute("datasetName", name)
    manager.command_inout("StartDataset")
    manager.command_inout("SetParameters", '{"Sample_description": "fault test"}')
    for i in range(files):
        manager.write_attribute("lastDataFile", f"/data/{name}/file_{i:04d}.h5")
    start = time.perf_counter()
    manager.command_inout("EndDataset")
    return time.perf_counter() - start


def datasets_on(port: int, queue: str, expect: int) -> list[tuple[str, str]]:
    """(icat-message-id, dataset name) of every dataset message on the queue, consumed."""
    received = drain(port, queue, expect=expect, idle=1.5, timeout=90)
    found = []
    for headers, body in received:
        match = DATASET_NAME.search(body)
        if match is not None:
            found.append((headers[MESSAGE_ID_HEADER], match.group(1)))
    return found


def outbox_ids(beamline: Beamline) -> list[str]:
    """Ids of the dataset messages waiting in the MetadataManager's outbox (server down)."""
    with sqlite3.connect(beamline.outbox_path() / "outbox.sqlite3") as db:
        rows = db.execute("SELECT id FROM outbox WHERE kind = 'dataset' ORDER BY seq").fetchall()
    return [str(row[0]) for row in rows]


def test_server_killed_right_after_end_dataset_delivers_after_restart(
    beamline_factory: Callable[..., Beamline], tmp_path: Path
) -> None:
    port = free_port()  # no broker there yet: nothing can be delivered
    queue = private_queue("crash")
    beamline = beamline_factory(
        "e2ecrash", queue_urls=[f"127.0.0.1:{port}"], queue=queue, icatplus=None
    )
    open_session(beamline)
    names = [f"crash_{i:04d}" for i in range(5)]
    for name in names:
        run_dataset(beamline.manager, name, files=3)
    beamline.manager_server.kill()  # kill -9 as soon as the last EndDataset returned
    waiting = outbox_ids(beamline)
    assert len(waiting) == len(names)
    broker = ActiveMQ(tmp_path / "broker", port)
    broker.start()
    try:
        beamline.manager_server.start()
        manager = beamline.manager
        wait_delivered(manager, 60)
        assert manager.read_attribute("brokerConnected").value is True
        # the cleared datasetName is kept in the transaction that stored the registration:
        # a restart never offers the ended dataset's name again
        assert manager.state() == tango.DevState.STANDBY
        assert manager.read_attribute("datasetName").value == ""
        arrived = datasets_on(port, queue, expect=len(names))
    finally:
        broker.kill()
    print(f"\n{len(names)} datasets ended before kill -9; {len(arrived)} arrived after restart")
    assert [name for _, name in arrived] == names
    assert [message_id for message_id, _ in arrived] == waiting


def test_broker_killed_mid_run_of_200_datasets_loses_none(
    beamline_factory: Callable[..., Beamline], activemq_factory: Callable[[], ActiveMQ]
) -> None:
    broker = activemq_factory()
    queue = private_queue("outage")
    beamline = beamline_factory("e2eoutage", queue_urls=[broker.url], queue=queue, icatplus=None)
    open_session(beamline)
    manager = beamline.manager
    names = [f"outage_{i:04d}" for i in range(200)]
    killed_at = 0.0
    during_outage: list[float] = []
    for i, name in enumerate(names):
        if i == 100:
            broker.kill()
            killed_at = time.monotonic()
        took = run_dataset(manager, name)
        if killed_at:
            during_outage.append(took)
    # the outage, as the device shows it: not a FAULT, and it says what waits
    wait_until(lambda: manager.read_attribute("brokerConnected").value is False, 10, "link down")
    wait_until(lambda: re.search(r"\d+ datasets waiting", manager.status()), 5, "Status to say so")
    assert manager.state() == tango.DevState.STANDBY
    waiting = manager.read_attribute("undeliveredCount").value
    status = manager.status()
    assert waiting >= 100, status
    assert manager.read_attribute("lastDeliveryError").value
    time.sleep(max(0.0, killed_at + 10 - time.monotonic()))
    broker.start()
    took = wait_delivered(manager, 60)
    assert manager.read_attribute("brokerConnected").value is True
    assert manager.read_attribute("lastDeliveryError").value == ""
    arrived = datasets_on(broker.port, queue, expect=len(names))
    arrived_names = [name for _, name in arrived]
    duplicates = len(arrived) - len(set(arrived_names))
    print(
        f"\nbroker down with {waiting} undelivered; delivered {took:.1f} s after its restart; "
        f"{len(arrived)} dataset messages for {len(names)} datasets: {duplicates} duplicates; "
        f"slowest EndDataset during the outage {max(during_outage) * 1e3:.0f} ms\n"
        f"Status during the outage: {status!r}"
    )
    assert set(arrived_names) == set(names), f"missing: {sorted(set(names) - set(arrived_names))}"
    assert len({message_id for message_id, _ in arrived}) == len(names)
    assert duplicates <= 64  # at most the window of SENDs in flight at the kill
    assert max(during_outage) < 1.0  # the outage never blocks the beamline


def test_device_answers_every_call_while_its_health_watcher_reports(
    beamline_factory: Callable[..., Beamline],
) -> None:
    """Nothing delivered (broker and ICAT+ down): the health watcher pushes a change every
    second (undeliveredCount, Status) while clients keep the device busy. Every call must
    return promptly; none may wait for the Tango client timeout (3 s)."""
    beamline = beamline_factory(
        "e2ebusy",
        queue_urls=[f"127.0.0.1:{free_port()}"],
        queue=private_queue("busy"),
        icatplus=None,
    )
    open_session(beamline)
    slow: list[tuple[str, float]] = []
    calls = [0]
    stop = threading.Event()

    def logbook_client() -> None:
        proxy = tango.DeviceProxy(beamline.manager_name)
        while not stop.is_set():
            start = time.perf_counter()
            try:
                proxy.command_inout("notifyInfo", "busy")
            except tango.DevFailed as error:
                slow.append((error.args[-1].desc, time.perf_counter() - start))
            calls[0] += 1

    threads = [threading.Thread(target=logbook_client) for _ in range(2)]
    for thread in threads:
        thread.start()
    manager = beamline.manager
    deadline = time.monotonic() + 10
    datasets = 0
    try:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                run_dataset(manager, f"busy_{datasets:04d}")
            except tango.DevFailed as error:
                slow.append((error.args[-1].desc, time.perf_counter() - start))
                break
            datasets += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(f"\n{datasets} datasets and {calls[0]} logbook calls in 10 s; failed: {slow}")
    assert slow == []
    assert manager.read_attribute("undeliveredCount").value == datasets + calls[0]


# -- the outbox cannot keep data --------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of our own (tests run as root), unmounted at the end."""
    mountpoint = tmp_path / "tiny_disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to fix the disk)."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    assert shutil.disk_usage(disk).free < 4096
    return filler


def test_full_disk_is_a_fault_with_a_clear_error_and_loses_no_dataset(
    beamline_factory: Callable[..., Beamline], activemq: ActiveMQ, tiny_disk: Path
) -> None:
    """The disk under the outbox fills up while a dataset is measured.

    The first call whose data cannot be kept fails with ICAT_Outbox (what is wrong, what to
    do) and the device goes to FAULT rather than accept it. Once space is freed, Reset
    brings it back and the client's usual retry completes the dataset: it arrives once,
    with every file.
    """
    queue = private_queue("disk")
    beamline = beamline_factory(
        "e2edisk",
        queue_urls=[activemq.url],
        queue=queue,
        icatplus=None,
        manager_properties={"outboxDirectory": [str(tiny_disk)]},
    )
    manager = beamline.manager
    files = [f"/data/disk_full/{'long_name_' * 10}{i:04d}.h5" for i in range(40)]
    steps: list[tuple[str, Callable[[], object]]] = [
        ("datasetName", lambda: manager.write_attribute("datasetName", "disk_full_0001")),
        ("StartDataset", lambda: manager.command_inout("StartDataset")),
        *[
            (f"lastDataFile {i}", partial(manager.write_attribute, "lastDataFile", path))
            for i, path in enumerate(files)
        ],
        ("EndDataset", lambda: manager.command_inout("EndDataset")),
    ]
    try:
        open_session(beamline)
        run_dataset(manager, "before_0001")
        wait_delivered(manager)
        filler = fill(tiny_disk)
        failed_at, failure = len(steps), None
        for index, (_, step) in enumerate(steps):
            try:
                step()
            except tango.DevFailed as refusal:
                failed_at, failure = index, refusal
                break
        assert failure is not None, "the full disk went unnoticed: every call succeeded"
        error = failure.args[0]
        assert error.reason == "ICAT_Outbox", f"{steps[failed_at][0]}: {error.reason} {error.desc}"
        assert "outbox" in error.desc and "free disk space" in error.desc, error.desc
        assert manager.state() == tango.DevState.FAULT
        assert "free disk space" in manager.status()
        with pytest.raises(tango.DevFailed) as refused:
            manager.write_attribute("datasetName", "disk_full_0002")
        assert "FAULT" in refused.value.args[0].desc and "Reset" in refused.value.args[0].desc
        # still full: Reset cannot keep anything new, the device stays in FAULT
        with contextlib.suppress(tango.DevFailed):
            manager.command_inout("Reset")
        assert manager.state() == tango.DevState.FAULT
        filler.unlink()
        manager.command_inout("Reset")
        state = manager.state()
        assert state != tango.DevState.FAULT, manager.status()
        if state == tango.DevState.RUNNING:  # the dataset kept running: add what it lacks
            kept = set(manager.read_attribute("datafileList").value or ())
            for path in files:
                if path not in kept:
                    manager.write_attribute("lastDataFile", path)
            manager.command_inout("EndDataset")
        elif steps[failed_at][0] != "EndDataset":  # not accepted: the client starts again
            for _, step in steps:
                step()
        # else Reset registered what EndDataset had ended
        assert manager.state() == tango.DevState.STANDBY
        wait_delivered(manager)
        arrived = drain(activemq.port, queue, expect=3, idle=1.5, timeout=60)
    finally:
        beamline.stop()  # before the disk is unmounted
    print(f"\nfirst call to fail on the full disk: {steps[failed_at][0]}")
    datasets = {m.group(1): body for _, body in arrived if (m := DATASET_NAME.search(body))}
    assert list(datasets) == ["before_0001", "disk_full_0001"]
    assert len([body for _, body in arrived if DATASET_NAME.search(body)]) == 2
    assert re.findall(r"<tns:datafile><tns:location>([^<]*)<", datasets["disk_full_0001"]) == files


def test_unusable_outbox_at_start_is_a_fault_until_fixed(
    beamline_factory: Callable[..., Beamline], activemq: ActiveMQ, tmp_path: Path
) -> None:
    """The outbox directory is a file: FAULT naming it; Reset works only once it is fixed."""
    blocked = tmp_path / "outbox_root"
    outbox = blocked / "outbox" / "id01_metadata_e2eblocked"
    outbox.parent.mkdir(parents=True)
    outbox.write_text("not a directory")
    queue = private_queue("blocked")
    beamline = beamline_factory(
        "e2eblocked",
        queue_urls=[activemq.url],
        queue=queue,
        icatplus=None,
        manager_properties={"outboxDirectory": [str(blocked)]},
        start=False,  # a device in FAULT does not follow its MetaExperiment: no link to wait for
    )
    beamline.meta_server.start()
    beamline.manager_server.start()
    manager = beamline.manager
    assert manager.state() == tango.DevState.FAULT
    assert str(outbox) in manager.status()
    with contextlib.suppress(tango.DevFailed):
        manager.command_inout("Reset")  # nothing fixed yet
    assert manager.state() == tango.DevState.FAULT
    assert str(outbox) in manager.status()
    outbox.unlink()
    manager.command_inout("Reset")
    wait_until(lambda: manager.state() == tango.DevState.OFF, 10, "Reset to leave FAULT")
    wait_until(lambda: beamline.manager_name in (beamline.meta.followers or ()), 10, "the link")
    open_session(beamline)
    run_dataset(manager, "fixed_0001")
    wait_delivered(manager)
    assert [name for _, name in datasets_on(activemq.port, queue, expect=1)] == ["fixed_0001"]


def test_a_full_disk_under_the_meta_experiment_publishes_nothing_until_reset(
    beamline_factory: Callable[..., Beamline], activemq: ActiveMQ, tiny_disk: Path
) -> None:
    """A new proposal whose investigation message cannot be stored: FAULT, and neither the
    followers nor the memorized attributes see the proposal; Reset once the disk has room
    stores the message, then publishes the proposal."""
    queue = private_queue("metadisk")
    beamline = beamline_factory(
        "e2emetadisk", queue_urls=[activemq.url], queue=queue, icatplus=None, state=tiny_disk
    )
    try:
        open_session(beamline)
        before = beamline.manager.read_attribute("proposal").value
        filler = fill(tiny_disk)
        with pytest.raises(tango.DevFailed) as refused:
            beamline.meta.write_attribute("proposal", "hg_full_disk")
        assert refused.value.args[0].reason == "ICAT_Outbox", refused.value.args[0].desc
        assert "free disk space" in refused.value.args[0].desc
        assert beamline.meta.state() == tango.DevState.FAULT
        assert beamline.manager.read_attribute("proposal").value == before
        memorized = tango.Database().get_device_attribute_property(beamline.meta_name, ["proposal"])
        assert memorized["proposal"]["__value"] == [before]
        filler.unlink()
        beamline.meta.command_inout("Reset")
        assert beamline.meta.state() == tango.DevState.ON, beamline.meta.status()
        assert beamline.manager.read_attribute("proposal").value == "hg_full_disk"
        assert beamline.manager.state() == tango.DevState.STANDBY
        arrived = drain(activemq.port, queue, expect=2, idle=1.5, timeout=60)
    finally:
        beamline.stop()  # before the disk is unmounted
    investigations = [body for _, body in arrived if "<tns:investigation" in body]
    assert any("hg_full_disk" in body for body in investigations), investigations
