"""The servers' Python logging, delivered to Tango's logging service, device by device.

Everything the servers log goes through Python's `logging` (the adapters' `log`, the
delivery threads' module loggers). One handler per server process forwards each record to
the Tango logger of the device it concerns, so Tango decides what is shown: `-v1`..`-v5`,
the logging targets (console, file, LogViewer's device) and the admin device's
`SetLoggingLevel` apply as to any Tango device, and each line names its device.

Which device a record concerns:
1. the device's own `log` (a LoggerAdapter) tags it: `record.device`;
2. a record from a thread the device owns (its outbox's senders, its link, its
   housekeeping), found by looking through the device's objects for that thread;
3. otherwise the server's only device, or, with several, the admin device (the server).

Known secret values are masked in every line, whatever logged them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import tango

from icat_servers.adapters import icatplus, stomp_sender

LOGGER = "icat_servers"
"""The adapters' logger (adapters.tango.common.log)."""
LOGGERS = (LOGGER, stomp_sender.log.name, icatplus.log.name)
MASK = "***"
LABELS_KEPT = 10000
SEARCH_DEPTH = 4
RESEARCH_AFTER_S = 1.0

_LEVELS = (
    (logging.CRITICAL, 200),
    (logging.ERROR, 300),
    (logging.WARNING, 400),
    (logging.INFO, 500),
    (logging.DEBUG, 600),
)
"""Python level -> log4tango level (tango._tango.LevelLevel: FATAL 200 ... DEBUG 600)."""


def tango_level(level: int) -> int:
    for python, log4tango in _LEVELS:
        if level >= python:
            return log4tango
    return 600


class TangoHandler(logging.Handler):
    """Forwards records to the Tango logger of the device they concern."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.devices: dict[str, weakref.ref[Any]] = {}
        self.owners: weakref.WeakKeyDictionary[threading.Thread, str] = weakref.WeakKeyDictionary()
        self.strangers: weakref.WeakKeyDictionary[threading.Thread, float] = (
            weakref.WeakKeyDictionary()
        )
        self.secrets: set[str] = set()
        self.labels: OrderedDict[str, str] = OrderedDict()
        self.guard = threading.Lock()

    # -- what the devices tell it ---------------------------------------------------

    def attach(self, device: Any) -> None:
        with self.guard:
            self.devices[device.get_name()] = weakref.ref(device)
            self.strangers = weakref.WeakKeyDictionary()

    def detach(self, device: Any) -> None:
        """The device is being deleted: its lines go to the server's logger from now on."""
        name = device.get_name()
        with self.guard:
            ref = self.devices.get(name)
            if ref is not None and ref() is device:
                del self.devices[name]

    def hide(self, secrets: Iterable[str]) -> None:
        with self.guard:
            self.secrets.update(secret for secret in secrets if secret)

    def label(self, message_id: str, text: str) -> None:
        """What a message is, for the line that says it was confirmed."""
        with self.guard:
            self.labels[message_id] = text
            while len(self.labels) > LABELS_KEPT:
                self.labels.popitem(last=False)

    # -- each record ------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = self.logger_for(record)
            if logger is None:
                return
            level = tango_level(record.levelno)
            if not logger.is_level_enabled(level):
                return
            text = self.masked(self.text(record))
            write = getattr(logger, "__log", None)
            if write is not None:  # with the record's own file and line, as C++ devices log
                write(record.filename, record.lineno, level, text)
            else:
                logger.log(level, text)
        except Exception:
            self.handleError(record)

    def text(self, record: logging.LogRecord) -> str:
        text = self.format(record)
        ids = getattr(record, "message_ids", None)
        if ids:
            with self.guard:
                known = [(i, self.labels[i]) for i in ids if i in self.labels]
            if len(ids) == 1 and known:
                text = f"{text} ({known[0][1]})"
            elif known:
                text = f"{text} ({'; '.join(f'{i}: {label}' for i, label in known)})"
        return text

    def masked(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def logger_for(self, record: logging.LogRecord) -> Any:
        name = getattr(record, "device", None) or self.owner(threading.current_thread())
        if name is None:
            with self.guard:
                alive = [ref() for ref in self.devices.values()]
            devices = [device for device in alive if device is not None]
            if len(devices) == 1:
                return devices[0].get_logger()
            return _admin_logger()
        with self.guard:
            ref = self.devices.get(name)
        device = ref() if ref is not None else None
        return device.get_logger() if device is not None else _admin_logger()

    def owner(self, thread: threading.Thread) -> str | None:
        """The device whose objects hold this thread: its senders, link, housekeeping."""
        known = self.owners.get(thread)
        if known is not None:
            return known
        last = self.strangers.get(thread)
        if last is not None and time.monotonic() - last < RESEARCH_AFTER_S:
            return None
        with self.guard:
            devices = [(name, ref()) for name, ref in self.devices.items()]
        for name, device in devices:
            if device is not None and any(t is thread for t in _threads(device)):
                self.owners[thread] = name
                return name
        self.strangers[thread] = time.monotonic()
        return None


def _threads(root: object) -> Iterator[threading.Thread]:
    """Threads among the objects `root` holds, a few attributes deep."""
    seen: set[int] = {id(root)}
    level: list[object] = [root]
    for _ in range(SEARCH_DEPTH):
        deeper: list[object] = []
        for item in level:
            try:
                members = list(vars(item).values())
            except (TypeError, RuntimeError):
                continue
            for member in members:
                if isinstance(member, threading.Thread):
                    yield member
                elif id(member) not in seen and not isinstance(member, type):
                    seen.add(id(member))
                    deeper.append(member)
        level = deeper


def _admin_logger() -> Any:
    try:
        return tango.Util.instance().get_dserver_device().get_logger()
    except Exception:  # no server (a unit test) or shutting down: nowhere to log
        return None


_handler: TangoHandler | None = None
_installing = threading.Lock()


def handler() -> TangoHandler:
    """The process's handler, installed on the servers' loggers at first use."""
    global _handler
    with _installing:
        if _handler is None:
            _handler = TangoHandler()
            for name in LOGGERS:
                logger = logging.getLogger(name)
                logger.addHandler(_handler)
                logger.setLevel(logging.DEBUG)
                logger.propagate = False
        return _handler


class DeviceLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A device's logger: what it logs goes to its own Tango logger.

    A line the device's Tango level would drop is not even made: the calls on the
    data path (state changes, registrations) then cost a level check.
    """

    def __init__(self, device: Any) -> None:
        super().__init__(logging.getLogger(LOGGER), {"device": device.get_name()})
        self.device = weakref.ref(device)

    def isEnabledFor(self, level: int) -> bool:
        device = self.device()
        if device is None:
            return False
        enabled: bool = device.get_logger().is_level_enabled(tango_level(level))
        return enabled

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def attach(device: Any) -> DeviceLog:
    """Route the device's records (and its threads') to its Tango logger; its `log`."""
    handler().attach(device)
    return DeviceLog(device)


def detach(device: Any) -> None:
    handler().detach(device)


def hide(secrets: Iterable[str]) -> None:
    handler().hide(secrets)


def label(message_id: str, text: str) -> None:
    handler().label(message_id, text)
