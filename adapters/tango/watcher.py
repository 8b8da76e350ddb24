"""A device's eye on what changes without a call: its outbox and its broker link."""

from __future__ import annotations

import threading
from collections.abc import Callable

import tango

from icat_servers.adapters.outbox_store import OutboxUnavailable
from icat_servers.adapters.tango.common import log

PERIOD_S = 1.0


class Watcher:
    """Calls `refresh` every second, in a thread of its own, under the device's monitor
    (the lock every Tango call of the device holds), until stopped."""

    def __init__(self, device: tango.server.Device, refresh: Callable[[], None]) -> None:
        self.device = device
        self.refresh = refresh
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self.watch, name=f"{device.get_name()} watcher", daemon=True
        )

    def start(self) -> None:
        if not self.thread.is_alive():
            self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def watch(self) -> None:
        while not self.stopping.wait(PERIOD_S):
            try:
                with tango.AutoTangoMonitor(self.device):
                    self.refresh()
            except OutboxUnavailable as error:  # closed by a shutdown, or the disk: next time
                log.warning("health refresh skipped: %s", error)
            except tango.DevFailed as error:  # a call held the monitor too long: next time
                log.warning("health refresh skipped: %s", error.args[0].desc)
