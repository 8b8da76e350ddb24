"""The outbox through the device that owns it, with `icat-servers outbox` as a process.

ICAT+ refuses (400) until the cause is fixed; the refused messages are set aside, then
resent and delivered once each, in order. An export is read back by pyicat-plus's own
`icat-store-from-file`, which sends it to the mock ICAT ingester.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pyicat_plus_pytest_plugin.servers.icat_db import IcatDb

from tests.e2e_delivery.conftest import Beamline, unique_proposal, wait_delivered, wait_until
from tests.operators.conftest import Gate, icat_servers
from tests.services.activemq import ActiveMQ, free_port
from tests.services.icat_mocks import INGEST_QUEUE, IcatIngesterMock, IcatPlusMock

pytestmark = pytest.mark.slow

STORE_FROM_FILE = Path(sys.executable).parent / "icat-store-from-file"


def texts(messages: list[dict[str, object]]) -> list[str]:
    return [m["content"][0]["text"] for m in messages if m.get("content")]  # type: ignore[index]


def test_refused_messages_are_resent_after_the_fix_once_each_in_order(
    beamline_factory: Callable[..., Beamline],
    activemq: ActiveMQ,
    icatplus_gate: Gate,
    icatplus_mock: IcatPlusMock,
    tango_db: str,
) -> None:
    beamline = beamline_factory(
        "opresend", queue_urls=[activemq.url], queue="/queue/op.resend", icatplus=icatplus_gate
    )
    meta, manager, device = beamline.meta, beamline.manager, beamline.manager_name
    meta.write_attribute("proposal", unique_proposal("op"))
    for text in ("first", "second", "doomed", "third"):
        manager.command_inout("notifyInfo", text)
    wait_until(lambda: manager.read_attribute("setAsideCount").value == 4, 30, "4 refusals")
    assert len(icatplus_gate.refused) == 4

    listed = icat_servers(["outbox", device, "list"], tango_db)
    assert listed.returncode == 0, listed.stderr
    assert "0 waiting, 4 set aside" in listed.stdout
    assert listed.stdout.count("answered 400 Bad Request: investigation not found") == 4
    found = json.loads(manager.command_inout("OutboxList"))
    ids = {entry["what"]: entry["id"] for entry in found["set_aside"]}
    assert [entry["what"] for entry in found["set_aside"]] == ["first", "second", "doomed", "third"]
    assert all(entry["attempts"] == 1 for entry in found["set_aside"])

    shown = icat_servers(["outbox", device, "show", ids["first"]], tango_db)
    assert shown.returncode == 0, shown.stderr
    assert f"to: POST {icatplus_gate.base_url}/dataacquisition/***/notification?" in shown.stdout
    assert '"text": "first"' in shown.stdout and "refused: ICAT+" in shown.stdout

    dropped = icat_servers(["outbox", device, "drop", ids["doomed"]], tango_db)
    assert dropped.returncode == 0, dropped.stderr
    unknown = icat_servers(["outbox", device, "drop", ids["doomed"]], tango_db)
    assert unknown.returncode == 1 and "no message" in unknown.stderr
    assert manager.read_attribute("setAsideCount").value == 3

    icatplus_gate.broken = False  # the cause is fixed: ICAT+ knows the proposal
    manager.command_inout("notifyInfo", "after the fix")
    assert texts(icatplus_mock.collect(1)) == ["after the fix"]

    resent = icat_servers(["outbox", device, "resend", "--all"], tango_db)
    assert resent.returncode == 0, resent.stderr
    assert resent.stdout.split() == [
        word
        for i in ("first", "second", "third")
        for word in ("back", "in", "the", "waiting", "queue:", ids[i])
    ]
    wait_delivered(manager)
    assert texts(icatplus_mock.collect(3, timeout=30)) == ["first", "second", "third"]
    assert manager.read_attribute("setAsideCount").value == 0
    again = icat_servers(["outbox", device, "resend", "--all"], tango_db)
    assert again.returncode == 0 and "nothing is set aside" in again.stdout
    for output in (listed, shown, dropped, resent):
        assert icatplus_gate.api_key not in output.stdout + output.stderr


def test_an_export_is_read_back_by_pyicat_plus_icat_store_from_file(
    beamline_factory: Callable[..., Beamline],
    icat_ingester: IcatIngesterMock,
    tango_db: str,
    tmp_path: Path,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # no broker: everything stays in the outboxes
    beamline = beamline_factory("opexport", queue_urls=[nowhere], queue=INGEST_QUEUE, icatplus=None)
    meta, manager = beamline.meta, beamline.manager
    proposal = unique_proposal("ex")
    meta.write_attribute("proposal", proposal)
    meta.write_attribute("sample", "lysozyme")
    names = ["export_0001", "export_0002"]
    for name in names:
        manager.write_attribute("datasetName", name)
        manager.command_inout("StartDataset")
        manager.write_attribute("lastDataFile", f"/data/{name}/f.h5")
        manager.command_inout("EndDataset")
    manager.command_inout("notifyInfo", "exported note")

    for device, folder in ((beamline.meta_name, "meta"), (beamline.manager_name, "manager")):
        done = icat_servers(["outbox", device, "export", str(tmp_path / folder)], tango_db)
        assert done.returncode == 0, done.stderr
    assert [p.suffix for p in sorted((tmp_path / "manager").iterdir())] == [".xml", ".xml", ".json"]
    [note] = (tmp_path / "manager").glob("*.json")
    assert json.loads(note.read_text())["body"]["content"][0]["text"] == "exported note"
    assert manager.read_attribute("undeliveredCount").value == 3  # an export sends nothing

    for folder in ("meta", "manager"):
        subprocess.run(
            [
                str(STORE_FROM_FILE),
                str(tmp_path / folder / "*.xml"),
                "--queue",
                icat_ingester.broker.url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    received = [m for m in icat_ingester.collect(3, timeout=60) if isinstance(m, dict)]
    assert [m.get("experiment") for m in received if "experiment" in m] == [proposal]
    assert [m["name"] for m in received if "name" in m] == names
    [investigation] = IcatDb(icat_ingester.data_dir).get_investigations("id01", proposal)
    recorded = IcatDb(icat_ingester.data_dir).get_datasets(investigation["id"])
    assert sorted(r["name"] for r in recorded) == names
