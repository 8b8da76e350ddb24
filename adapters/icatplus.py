"""Delivers the ICAT+ channel of the outbox (e-logbook messages and images) over HTTP.

Messages are posted one at a time, oldest first: a message that cannot be delivered
yet (ICAT+ down, 5xx) blocks the later ones, so the logbook keeps its order. A message
ICAT+ refuses for good (4xx) is set aside with the refusal instead of being retried
forever. The API key is a secret: every text this module produces (logs, errors,
health) has it replaced by `***`, including httpx's own request log lines.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from icat_servers.adapters.outbox_store import OutboxStore, OutboxUnavailable
from icat_servers.icatcore.outbox import Channel, OutboxMessage
from icat_servers.statecharts.broker_link import backoff_delay

log = logging.getLogger(__name__)

MASK = "***"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
TRANSIENT_4XX = frozenset({408, 425, 429})
"""Client errors that mean "try again later", not "this message is wrong"."""
_HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)


class SecretMask:
    """Replaces a secret (and its URL-encoded form) in any text."""

    def __init__(self, secret: str) -> None:
        self.forms = sorted({s for s in (secret, quote(secret, safe="")) if s}, key=len)[::-1]

    def __call__(self, text: str) -> str:
        for form in self.forms:
            text = text.replace(form, MASK)
        return text


class _MaskingFilter(logging.Filter):
    """Masks the API key in log records of the HTTP libraries (they log request URLs)."""

    def __init__(self, mask: SecretMask) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        if self.mask.forms:
            record.msg = self.mask(record.getMessage())
            record.args = None
        return True


@dataclass(frozen=True, slots=True)
class IcatPlusStatus:
    """What the ICAT+ sender knows, for health and Status; free of secrets."""

    last_error: str | None
    failing_since: float | None
    last_delivery: float | None
    delivered: int
    set_aside: int


class IcatPlusSender(threading.Thread):
    """Worker thread: posts Channel.ICATPLUS messages to ICAT+, in order, one at a time."""

    def __init__(
        self,
        store: OutboxStore,
        base_url: str,
        api_key: str,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_delay: float = 5.0,
        idle_poll: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(name="icatplus-sender", daemon=True)
        self.store = store
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.mask = SecretMask(api_key)
        self.max_delay = max_delay
        self.idle_poll = idle_poll
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            verify=True,
            follow_redirects=False,
            transport=transport,
        )
        self._filter = _MaskingFilter(self.mask)
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._last_delivery: float | None = None
        self._delivered = 0
        self._set_aside = 0
        self._failures = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop posting; an unconfirmed message stays in the outbox."""
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
        self._client.close()
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)

    def status(self) -> IcatPlusStatus:
        with self._lock:
            return IcatPlusStatus(
                last_error=self._last_error,
                failing_since=self._failing_since,
                last_delivery=self._last_delivery,
                delivered=self._delivered,
                set_aside=self._set_aside,
            )

    def url_for(self, message: OutboxMessage) -> str:
        """The real URL, with the key: only ever handed to httpx, never shown."""
        path = message.destination.replace("{api_key}", quote(self._api_key, safe=""))
        return f"{self.base_url}/{path.lstrip('/')}"

    def shown_url(self, message: OutboxMessage) -> str:
        return self.mask(f"{self.base_url}/{message.destination.lstrip('/')}").replace(
            "{api_key}", MASK
        )

    def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                batch = self.store.pending(Channel.ICATPLUS, limit=1)
            except OutboxUnavailable as error:
                self._failed(str(error))
                self._stopping.wait(1.0)
                continue
            if not batch:
                self._wake.wait(self.idle_poll)
                continue
            if not self._deliver(batch[0]):
                self._stopping.wait(backoff_delay(self._failures, cap=self.max_delay))

    def _deliver(self, message: OutboxMessage) -> bool:
        """One POST; True when the message left the outbox (delivered or set aside)."""
        where = self.shown_url(message)
        try:
            response = self._client.post(
                self.url_for(message),
                params=list(message.query),
                content=message.body,
                headers={"Content-Type": message.content_type},
            )
        except httpx.TimeoutException as error:
            self._failed(f"ICAT+ {where} did not answer in time ({type(error).__name__})")
            return False
        except httpx.HTTPError as error:
            self._failed(f"cannot reach ICAT+ {where}: {self.mask(_reason(error))}")
            return False
        status = response.status_code
        if 200 <= status < 300:
            self.store.confirm(message.id)
            log.debug("ICAT+ confirmed %s %s", message.kind.value, message.id)
            with self._lock:
                self._delivered += 1
                self._last_delivery = time.time()
                self._last_error = None
                self._failing_since = None
                self._failures = 0
            return True
        summary = f"ICAT+ {where} answered {status} {response.reason_phrase}"
        detail = self.mask(response.text.strip())[:300]
        if detail:
            summary = f"{summary}: {detail}"
        if 400 <= status < 500 and status not in TRANSIENT_4XX:
            self.store.set_aside(message.id, summary)
            with self._lock:
                self._set_aside += 1
                self._last_error = f"set aside {message.kind.value} {message.id}: {summary}"
            log.error("set aside %s %s: %s", message.kind.value, message.id, summary)
            return True
        self._failed(summary)
        return False

    def _failed(self, text: str) -> None:
        text = self.mask(text)
        with self._lock:
            self._failures += 1
            self._last_error = text
            if self._failing_since is None:
                self._failing_since = time.time()
        log.warning("%s", text)


def _reason(error: httpx.HTTPError) -> str:
    text = str(error).strip()
    return text or type(error).__name__
