"""The link between a MetaExperiment and its MetadataManagers, in either start order.

A follower asks its MetaExperiment (`Follow`) before it accepts calls, then every half
second: that (re)registers it and answers the experiment. A MetaExperiment that starts
finds its followers in the Tango database and tells them before it accepts calls, then
calls `ExperimentChanged` on each of them before a write returns: a client never polls
for a state it just caused. Each message carries the leader's run id and a revision, so an
older answer never overwrites a newer one: runs are ordered by their start time, so a
late answer of a MetaExperiment that has since restarted is older too.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import tango

from icat_servers.adapters.tango.common import log
from icat_servers.icatcore.records import Experiment

CALL_TIMEOUT_MS = 3000
START_TIMEOUT_MS = 1000
"""How long a start or an Init waits for a peer that does not answer."""
FOLLOW_INTERVAL_S = 0.5
NOT_DEFINED = "is not defined in the Tango database: check the metaExperimentDevice property"
UNREACHABLE = "cannot be reached; waiting for it"


@dataclass(frozen=True, slots=True)
class Stamp:
    run: str
    revision: int


def encode(experiment: Experiment, stamp: Stamp) -> str:
    return json.dumps(
        {
            "proposal": experiment.proposal,
            "sample": experiment.sample,
            "dataRoot": experiment.data_root,
            "run": stamp.run,
            "revision": stamp.revision,
        }
    )


def decode(text: str) -> tuple[Experiment, Stamp]:
    fields = json.loads(text)
    return (
        Experiment(fields["proposal"], fields["sample"], fields["dataRoot"]),
        Stamp(fields["run"], int(fields["revision"])),
    )


def proxy(name: str, timeout_ms: int) -> tango.DeviceProxy:
    device = tango.DeviceProxy(name)
    device.set_timeout_millis(timeout_ms)
    return device


def not_defined(error: tango.DevFailed) -> bool:
    return any(item.reason == "DB_DeviceNotDefined" for item in error.args)


class Followers:
    """The MetaExperiment's side: who follows, and telling them before a write returns.

    A follower is kept by name; its proxy is made anew after a failed call, because a
    proxy whose connection failed refuses every call for a while.
    """

    def __init__(self, leader: str) -> None:
        self.leader = leader
        self.run = f"{time.time_ns():020d}-{uuid.uuid4()}"
        self.revision = 0
        self.proxies: dict[str, tango.DeviceProxy | None] = {}
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="followers")

    def names(self) -> list[str]:
        return sorted(self.proxies)

    def add(self, name: str) -> None:
        self.proxies.setdefault(name.lower(), None)

    def encode(self, experiment: Experiment) -> str:
        return encode(experiment, Stamp(self.run, self.revision))

    def discover(self, database: tango.Database | None, experiment: Experiment) -> None:
        """At start or Init: the MetadataManagers whose metaExperimentDevice names this
        device, told the experiment at once, in parallel, each given about a second."""
        if database is not None:
            for name in followers_in(database, self.leader):
                self.add(name)
        self.tell(self.encode(experiment), self.names(), START_TIMEOUT_MS)

    def publish(self, experiment: Experiment) -> None:
        self.revision += 1
        self.tell(self.encode(experiment), self.names(), CALL_TIMEOUT_MS)

    def tell(self, text: str, names: Iterable[str], timeout_ms: int) -> None:
        names = list(names)
        if len(names) == 1:
            self.tell_one(names[0], text, timeout_ms)
        else:
            for _ in self.pool.map(lambda name: self.tell_one(name, text, timeout_ms), names):
                pass

    def tell_one(self, name: str, text: str, timeout_ms: int) -> None:
        try:
            device = self.proxies.get(name) or proxy(name, timeout_ms)
            device.set_timeout_millis(timeout_ms)
            device.command_inout("ExperimentChanged", text)
            self.proxies[name] = device
        except tango.DevFailed as error:
            log.info("follower %s did not take the change: %s", name, error.args[-1].desc)
            if not_defined(error):
                self.proxies.pop(name, None)
            elif name in self.proxies:
                self.proxies[name] = None

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def followers_in(database: tango.Database, leader: str) -> list[str]:
    """The MetadataManager devices of the database that follow `leader`."""
    try:
        names = list(database.get_device_exported_for_class("MetadataManager"))
    except RuntimeError:  # Tango's file database (-file=) cannot list them
        return []
    except tango.DevFailed as error:
        log.warning("could not list the MetadataManager devices: %s", error.args[-1].desc)
        return []
    found = []
    for name in names:
        try:
            values = database.get_device_property(name, "metaExperimentDevice")
        except tango.DevFailed:
            continue
        named = [str(v).strip().lower() for v in values.get("metaExperimentDevice", [])]
        if leader.lower() in named:
            found.append(name)
    return found


class Leader:
    """The MetadataManager's side: follow the MetaExperiment, notice when it goes or comes.

    `found` and `lost` are called with the device's lock held by the caller's choice;
    `heard` counts the answers taken, so that a failure seen before a newer answer
    arrived never marks the MetaExperiment lost.
    """

    def __init__(
        self,
        follower: str,
        leader: str,
        found: Callable[[str], None],
        lost: Callable[[str, int], None],
    ) -> None:
        self.follower = follower
        self.leader = leader
        self.found = found
        self.lost = lost
        self.last: Stamp | None = None
        self.heard = 0
        self.guard = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.follow, name=f"follow {leader}", daemon=True)
        self.device: tango.DeviceProxy | None = None

    def start(self) -> None:
        if not self.thread.is_alive():
            self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def take(self, text: str) -> Experiment | None:
        """Accept a message unless it is older than one already taken."""
        experiment, stamp = decode(text)
        with self.guard:
            if self.last and (stamp.run, stamp.revision) < (self.last.run, self.last.revision):
                return None
            self.last = stamp
            self.heard += 1
        return experiment

    def ask(self, timeout_ms: int = CALL_TIMEOUT_MS) -> tuple[str | None, str]:
        """One Follow call: the answer, or None and why the MetaExperiment did not answer."""
        try:
            if self.device is None:
                self.device = proxy(self.leader, timeout_ms)
            self.device.set_timeout_millis(timeout_ms)
            return self.device.command_inout("Follow", self.follower), ""
        except tango.DevFailed as error:
            self.device = None
            return None, NOT_DEFINED if not_defined(error) else UNREACHABLE

    def ask_now(self) -> None:
        """Before the device accepts calls: at most about a second for an absent leader."""
        heard = self.heard
        answer, why = self.ask(START_TIMEOUT_MS)
        self.tell(answer, why, heard)

    def follow(self) -> None:
        while not self.stopping.wait(FOLLOW_INTERVAL_S):
            heard = self.heard
            answer, why = self.ask()
            self.tell(answer, why, heard)

    def tell(self, answer: str | None, why: str, heard: int) -> None:
        """The follower's own trouble is not the leader's absence: log it and go on."""
        try:
            if answer is not None:
                self.found(answer)
            else:
                self.lost(why, heard)
        except Exception:
            log.exception("following %s: the follower failed to take the news", self.leader)
