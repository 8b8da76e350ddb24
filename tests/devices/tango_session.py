"""The rules' subject made of real devices: each move is one Tango call, as BLISS makes it."""

from __future__ import annotations

import json
import time
from typing import Any

import tango

from icat_servers.adapters.outbox_store import OutboxStore
from icat_servers.icatcore.outbox import Channel, Kind
from tests.session_model import Observation, Rejected, Unreadable


class TangoSession:
    def __init__(self, meta: str, manager: str, outbox: OutboxStore) -> None:
        self.meta = tango.DeviceProxy(meta)
        self.manager = tango.DeviceProxy(manager)
        self.outbox = outbox
        self.baseline = 0

    def begin(self) -> None:
        """Back to a fresh session, as a new example starts from a fresh model."""
        self.meta.write_attribute("proposal", "")
        self.baseline = self.outbox.count(Channel.ICAT, Kind.DATASET)

    def _call(self, call: object) -> None:
        try:
            call()  # type: ignore[operator]
        except tango.DevFailed as error:
            first = error.args[0]
            raise Rejected(first.desc, bad_input=first.reason == "ICAT_InvalidInput") from None

    def write_proposal(self, name: str) -> None:
        self._call(lambda: self.meta.write_attribute("proposal", name))

    def write_sample(self, name: str) -> None:
        self._call(lambda: self.meta.write_attribute("sample", name))

    def write_data_root(self, path: str) -> None:
        self._call(lambda: self.meta.write_attribute("dataRoot", path))

    def write_dataset_name(self, name: str) -> None:
        self._call(lambda: self.manager.write_attribute("datasetName", name))

    def start_dataset(self) -> None:
        self._call(lambda: self.manager.command_inout("StartDataset"))

    def end_dataset(self) -> None:
        self._call(lambda: self.manager.command_inout("EndDataset"))

    def abort_dataset(self) -> None:
        self._call(lambda: self.manager.command_inout("AbortDataset"))

    def set_parameters(self, text: str) -> None:
        self._call(lambda: self.manager.command_inout("SetParameters", text))

    def add_file(self, path: str) -> None:
        self._call(lambda: self.manager.write_attribute("lastDataFile", path))

    def observe(self) -> Observation:
        values: dict[str, Any] = {
            a.name: a.value
            for a in self.manager.read_attributes(
                ["proposal", "sampleName", "datasetName", "dataFolder", "datafileList"]
            )
        }
        try:
            self.manager.read_attribute("datasetName")
        except tango.DevFailed as error:
            assert error.args[0].reason == "API_AttrNotAllowed"
            values["datasetName"] = Unreadable(error.args[0].desc)
        root = self.meta.read_attribute("dataRoot").value
        return Observation(
            state=str(self.manager.state()),
            proposal=values["proposal"],
            sample=values["sampleName"],
            data_root=root,
            dataset_name=values["datasetName"],
            data_folder=values["dataFolder"],
            files=tuple(values["datafileList"] or ()),
        )

    def registrations(self) -> int:
        return self.outbox.count(Channel.ICAT, Kind.DATASET) - self.baseline


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def parameters(**values: str) -> str:
    return json.dumps(values)
