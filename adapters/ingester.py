"""Is the ICAT ingester taking what the broker confirmed? Watched from outside the call path.

The broker confirms every message it stores, so a device looks healthy while its
registrations pile up in ActiveMQ when nobody consumes the queue. This module looks
at the queue itself:

- it browses the queue over STOMP (a SUBSCRIBE with `browser: true` lists the
  messages, headers included, then sends one message with `browser: end`; the
  messages stay for the real consumer) and counts which of this device's confirmed
  messages (their `icat-message-id`) are still there;
- where `jolokiaPort` is set, it reads the queue's consumer count from Jolokia, with
  the URL and credentials pyicat-plus uses.

Consumer advisories would be simpler but do not reach a STOMP subscriber on ActiveMQ
5.17 (shared/notes/activemq.md). A thread refreshes the view every `period` seconds
(ICAT_SERVERS_INGESTER_PERIOD, default 30); a Tango read only returns the last view.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import stomp

from icat_servers.adapters.stomp_sender import MESSAGE_ID_HEADER
from icat_servers.icatcore.config import queue_name as destination_of

log = logging.getLogger(__name__)

PERIOD_ENVIRONMENT = "ICAT_SERVERS_INGESTER_PERIOD"
DEFAULT_PERIOD_S = 30.0
BROWSE_TIMEOUT_S = 10.0
BROWSE_PAGE = 400
"""ActiveMQ's default maxBrowsePageSize: a browse lists at most this many messages."""
JOLOKIA_USER = "user"
"""pyicat-plus's Jolokia credentials (user:user): a read-only monitoring account."""
UNKNOWN = -1


def period_from_environment() -> float:
    """Seconds between two looks at the queue; tests set a short one."""
    text = os.environ.get(PERIOD_ENVIRONMENT, "").strip()
    try:
        period = float(text) if text else DEFAULT_PERIOD_S
    except ValueError:
        log.warning("%s=%r is not a number of seconds: using %g", PERIOD_ENVIRONMENT, text, 30)
        return DEFAULT_PERIOD_S
    return period if period > 0 else DEFAULT_PERIOD_S


class BrowseFailed(RuntimeError):
    """The queue could not be browsed; the text says why (secret-free)."""


def browse(
    host: str,
    port: int,
    destination: str,
    *,
    login: str | None = None,
    passcode: str | None = None,
    timeout: float = BROWSE_TIMEOUT_S,
) -> list[dict[str, str]]:
    """The headers of every message on the queue (up to the broker's browse page).

    Nothing is consumed: ActiveMQ's queue browser leaves the messages in place.
    """
    frames: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: Any) -> None:
            frames.put(dict(frame.headers))

        def on_error(self, frame: Any) -> None:
            frames.put({"browser": "error", "message": str(frame.headers.get("message", ""))})

    conn = stomp.Connection12([(host, port)], timeout=timeout, reconnect_attempts_max=1)
    conn.set_listener("browse", Listener())
    try:
        conn.connect(login, passcode, wait=True)
        conn.subscribe(
            destination=destination,
            id="icat-servers-browse",
            ack="auto",
            headers={"browser": "true"},
        )
        found: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                headers = frames.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BrowseFailed(
                    f"broker {host}:{port} did not finish listing {destination} "
                    f"within {timeout:g} s"
                ) from None
            if headers.get("browser") == "end":
                return found
            if headers.get("browser") == "error":
                raise BrowseFailed(
                    f"broker {host}:{port} refused to list {destination}: {headers['message']}"
                )
            found.append(headers)
    except stomp.exception.StompException as error:
        raise BrowseFailed(
            f"cannot browse {destination} on broker {host}:{port} ({type(error).__name__})"
        ) from error
    finally:
        with contextlib.suppress(Exception):
            conn.disconnect()


def jolokia_url(host: str, port: int, queue_name: str) -> str:
    """The consumer count of the queue, as pyicat-plus asks Jolokia for it."""
    name = queue_name.removeprefix("/queue/")
    return (
        f"http://{host}:{port}/api/jolokia/read/org.apache.activemq:type=Broker,"
        f"brokerName=metadata,destinationType=Queue,destinationName={name}/ConsumerCount"
    )


def consumer_count(host: str, port: int, queue_name: str, timeout: float = 5.0) -> int:
    """Jolokia's ConsumerCount of the queue; raises httpx.HTTPError or ValueError."""
    response = httpx.get(
        jolokia_url(host, port, queue_name),
        auth=(JOLOKIA_USER, JOLOKIA_USER),
        timeout=timeout,
    )
    response.raise_for_status()
    value = response.json()["value"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Jolokia answered {value!r}, not a consumer count")
    return value


@dataclass(frozen=True, slots=True)
class IngesterView:
    """What the last look at the queue found."""

    waiting_in_broker: int = UNKNOWN
    """This device's confirmed messages still in the queue; -1 when unknown."""
    consumers: int = UNKNOWN
    """The queue's consumers from Jolokia; -1 when unknown or jolokiaPort is 0."""
    overdue: int = 0
    """Of those waiting, how many stayed longer than the grace time."""
    overdue_since: float | None = None
    """When the broker confirmed the oldest overdue one."""
    error: str | None = None
    """Why the last look failed, if it did."""

    def warning(self) -> str:
        """A Status line when registrations stay in the queue; "" when all is well."""
        if not self.overdue or self.overdue_since is None:
            return ""
        since = time.strftime("%H:%M", time.localtime(self.overdue_since))
        what = "registration" if self.overdue == 1 else "registrations"
        nobody = "; the queue has no consumer" if self.consumers == 0 else ""
        return (
            f"the ICAT ingester has not taken {self.overdue} {what} that the broker "
            f"confirmed since {since}{nobody}: is it running?"
        )


class IngesterWatch(threading.Thread):
    """Looks at the queue every `period` seconds; `view()` returns the last look."""

    def __init__(
        self,
        confirmed: deque[tuple[str, float]],
        where: Callable[[], tuple[str, int]],
        queue_name: str,
        *,
        grace: float,
        jolokia_port: int = 0,
        login: str | None = None,
        passcode: str | None = None,
        period: float | None = None,
        on_change: Callable[[IngesterView], None] | None = None,
    ) -> None:
        super().__init__(name="ingester-watch", daemon=True)
        self.confirmed = confirmed
        """Filled by the STOMP sender with (id, time) of what the broker confirmed."""
        self.where = where
        """The broker address the sender uses now (the messages are on that broker)."""
        self.destination = destination_of(queue_name)
        self.grace = grace
        self.jolokia_port = jolokia_port
        self._login = login
        self._passcode = passcode
        self.period = period_from_environment() if period is None else period
        self.on_change = on_change
        self._ours: dict[str, float] = {}
        """Confirmed ids not yet seen gone from the queue, with their confirmation time."""
        self._view = IngesterView()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def view(self) -> IngesterView:
        with self._lock:
            return self._view

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.refresh()
            except Exception:  # pragma: no cover - a bug: say so, keep watching
                log.exception("the ingester watch failed")
            self._stopping.wait(self.period)

    def refresh(self, now: float | None = None) -> IngesterView:
        """One look at the queue (and Jolokia); returns the new view."""
        while self.confirmed:
            message_id, at = self.confirmed.popleft()
            self._ours[message_id] = at
        host, port = self.where()
        error: str | None = None
        waiting = UNKNOWN
        try:
            listed = browse(
                host, port, self.destination, login=self._login, passcode=self._passcode
            )
        except BrowseFailed as failed:
            error = str(failed)
        else:
            present = {h.get(MESSAGE_ID_HEADER) for h in listed}
            if len(listed) < BROWSE_PAGE:  # the whole queue: what is not listed was taken
                self._ours = {i: at for i, at in self._ours.items() if i in present}
            waiting = len(self._ours)
        consumers = UNKNOWN
        if self.jolokia_port:
            try:
                consumers = consumer_count(host, self.jolokia_port, self.destination)
            except (httpx.HTTPError, ValueError, KeyError) as failed:
                error = error or f"Jolokia on {host}:{self.jolokia_port}: {failed}"
        when = time.time() if now is None else now
        overdue = [at for at in self._ours.values() if when - at > self.grace]
        view = IngesterView(
            waiting_in_broker=waiting,
            consumers=consumers,
            overdue=len(overdue) if waiting != UNKNOWN else 0,
            overdue_since=min(overdue) if overdue and waiting != UNKNOWN else None,
            error=error,
        )
        with self._lock:
            changed, self._view = view != self._view, view
        if changed and self.on_change is not None:
            self.on_change(view)
        return view


def watch(
    confirmed: deque[tuple[str, float]],
    where: Callable[[], tuple[str, int]],
    queue_name: str,
    grace: float,
    jolokia_port: int,
    credentials: Sequence[str | None] = (None, None),
    on_change: Callable[[IngesterView], None] | None = None,
) -> IngesterWatch:
    """A started watch."""
    login, passcode = credentials
    watcher = IngesterWatch(
        confirmed,
        where,
        queue_name,
        grace=grace,
        jolokia_port=jolokia_port,
        login=login,
        passcode=passcode,
        on_change=on_change,
    )
    watcher.start()
    return watcher
