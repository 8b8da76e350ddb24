"""Work a call must not wait for: done in order, in a thread of its own, never lost silently."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from icat_servers.adapters.tango.common import log

Job = Callable[[], None]


class Housekeeper:
    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.work, name=name, daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def stop(self) -> None:
        self.jobs.put(None)

    def work(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("background job %s failed", getattr(job, "__name__", job))
