"""The link between a MetaExperiment and its MetadataManagers, in either start order.

A follower calls `Follow` on its MetaExperiment every half second: that (re)registers it
and answers the experiment. The MetaExperiment calls `ExperimentChanged` on each follower
before a write returns, so a client never polls for a state it just caused. Each message
carries the leader's run id and a revision, so an older answer never overwrites a newer one.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import tango

from adapters.tango.common import log
from icatcore.records import Experiment

CALL_TIMEOUT_MS = 3000
FOLLOW_INTERVAL_S = 0.5


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


class Followers:
    """The MetaExperiment's side: who follows, and telling them, in turn, before returning."""

    def __init__(self, leader: str) -> None:
        self.leader = leader
        self.run = str(uuid.uuid4())
        self.revision = 0
        self.proxies: dict[str, tango.DeviceProxy] = {}

    def names(self) -> list[str]:
        return sorted(self.proxies)

    def add(self, name: str) -> None:
        """Count a follower only once it answers: a follower asks while it starts, before
        it can be called, and a proxy whose first connection failed refuses every call
        for a second, which would lose the next change (it is asked again in 0.5 s)."""
        if name not in self.proxies:
            proxy = tango.DeviceProxy(name)
            proxy.set_timeout_millis(CALL_TIMEOUT_MS)
            try:
                proxy.ping()
            except tango.DevFailed:
                return
            self.proxies[name] = proxy

    def encode(self, experiment: Experiment) -> str:
        return encode(experiment, Stamp(self.run, self.revision))

    def publish(self, experiment: Experiment) -> None:
        self.revision += 1
        text = self.encode(experiment)
        for name, proxy in list(self.proxies.items()):
            try:
                proxy.command_inout("ExperimentChanged", text)
            except tango.DevFailed as error:
                log.warning("follower %s did not take the change: %s", name, error.args[0].desc)
                if error.args[0].reason.startswith("API_"):
                    del self.proxies[name]


class Leader:
    """The MetadataManager's side: follow the MetaExperiment, notice when it goes or comes."""

    def __init__(
        self,
        follower: str,
        leader: str,
        found: Callable[[str], None],
        lost: Callable[[], None],
    ) -> None:
        self.follower = follower
        self.leader = leader
        self.found = found
        self.lost = lost
        self.last: Stamp | None = None
        self.reachable: bool | None = None
        self.guard = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.follow, name=f"follow {leader}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def newer(self, stamp: Stamp) -> bool:
        """Accept a message unless it is older than one already taken from the same run."""
        with self.guard:
            if self.last and self.last.run == stamp.run and stamp.revision < self.last.revision:
                return False
            self.last = stamp
            return True

    def take(self, text: str) -> Experiment | None:
        experiment, stamp = decode(text)
        return experiment if self.newer(stamp) else None

    def follow(self) -> None:
        proxy: tango.DeviceProxy | None = None
        while not self.stopping.is_set():
            try:
                if proxy is None:
                    proxy = tango.DeviceProxy(self.leader)
                    proxy.set_timeout_millis(CALL_TIMEOUT_MS)
                answer = proxy.command_inout("Follow", self.follower)
            except tango.DevFailed:
                proxy = None
                if self.reachable is not False:
                    self.reachable = False
                    self.tell(self.lost)
            else:
                self.reachable = True
                self.tell(partial(self.found, answer))
            self.stopping.wait(FOLLOW_INTERVAL_S)

    def tell(self, callback: Callable[[], None]) -> None:
        """The follower's own trouble is not the leader's absence: log it and go on."""
        try:
            callback()
        except Exception:
            log.exception("following %s: the follower failed to take the news", self.leader)
