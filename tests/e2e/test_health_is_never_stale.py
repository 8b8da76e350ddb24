"""What a client reads right after a call counts that call's message (issue: health that
is never stale): Status and undeliveredCount, with nothing delivered."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.conftest import Beamline

pytestmark = pytest.mark.slow


def waiting_datasets(status: str) -> int:
    found = re.search(r"(\d+) datasets?\b", status)
    assert found is not None, status
    return int(found.group(1))


def test_every_end_dataset_is_counted_when_the_call_returns(beamline: Beamline) -> None:
    manager = beamline.manager
    beamline.open_session("hg900", "s900", "/data/visitor/hg900")
    before = manager.read_attribute("undeliveredCount").value
    for n in range(1, 21):
        manager.write_attribute("datasetName", f"d{n}")
        manager.command_inout("StartDataset")
        manager.command_inout("EndDataset")
        assert manager.read_attribute("undeliveredCount").value == before + n
        assert waiting_datasets(manager.status()) >= n, manager.status()
    assert manager.read_attribute("oldestUndeliveredAge").value >= 0.0


def oldest_age(status: str) -> int:
    found = re.search(r"oldest waiting for (\d+) s", status)
    assert found is not None, status
    return int(found.group(1))


def test_the_meta_experiment_status_follows_its_outbox_without_a_write(
    beamline: Beamline,
) -> None:
    beamline.meta.write_attribute("proposal", "hg901")
    status = beamline.meta.status()
    assert "investigation message" in status and "other ICAT" not in status, status
    first = oldest_age(status)
    time.sleep(2.5)
    assert oldest_age(beamline.meta.status()) >= first + 2, "the age grows while it waits"


def test_a_logbook_message_is_in_status_when_the_call_returns(beamline: Beamline) -> None:
    manager = beamline.manager
    beamline.open_session("hg902", "s902", "/data/visitor/hg902")
    for n in range(1, 4):
        before = manager.read_attribute("undeliveredCount").value
        manager.command_inout("userComment", f"comment {n}")
        assert manager.read_attribute("undeliveredCount").value == before + 1
        found = re.search(r"(\d+) logbook messages?", manager.status())
        assert found is not None and int(found.group(1)) >= 1, manager.status()
