"""Delivers the ICAT channel of the outbox to the ActiveMQ broker over STOMP.

A message leaves the outbox only when the broker sent the RECEIPT for its SEND: with
persistent messages ActiveMQ sends it after the message is in its store. Several SENDs
may be in flight at once (each confirmed on its own receipt); when the connection
drops, the unconfirmed ones are simply sent again after reconnecting, with the same
`icat-message-id` header, so a receiver can drop the rare duplicate.

Which broker to try and how long to wait is decided by the BrokerLink chart; this
thread only does the waiting, the socket work and reports what happened.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import stomp

from icat_servers.adapters.outbox_store import OutboxStore, OutboxUnavailable
from icat_servers.icatcore.config import BrokerAddress
from icat_servers.icatcore.outbox import Channel, OutboxMessage
from icat_servers.statecharts.broker_link import BrokerLink

log = logging.getLogger(__name__)

MESSAGE_ID_HEADER = "icat-message-id"
CONFIRMED_KEPT = 100_000


@dataclass(frozen=True, slots=True)
class StompLinkStatus:
    """What the sender knows about its broker link, for health and Status."""

    connected: bool
    address: str | None
    """`host:port` of the broker in use (or being tried)."""
    last_error: str | None
    """Why the last attempt failed; None once the link works again."""
    failing_since: float | None
    """Wall-clock time of the first failure of the current outage."""
    last_delivery: float | None
    delivered: int
    in_flight: int


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    """Turns stomp.py callbacks (on its receiver thread) into events for the worker."""

    def __init__(self, events: queue.SimpleQueue[tuple[str, str]], wake: threading.Event):
        self.events = events
        self.wake = wake
        self.connected = threading.Event()

    def on_connected(self, frame: Any) -> None:
        self.connected.set()

    def on_receipt(self, frame: Any) -> None:
        self.events.put(("receipt", str(frame.headers.get("receipt-id", ""))))
        self.wake.set()

    def on_error(self, frame: Any) -> None:
        message = str(frame.headers.get("message", "")).strip() or "ERROR frame"
        self.events.put(("error", message))
        self.wake.set()

    def on_disconnected(self) -> None:
        self.events.put(("disconnected", ""))
        self.connected.clear()
        self.wake.set()

    def on_heartbeat_timeout(self) -> None:
        self.events.put(("error", "no heart-beat from the broker"))
        self.wake.set()


class _LinkDown(Exception):
    """The connection is no longer usable; the text says why (secret-free)."""


class StompSender(threading.Thread):
    """Worker thread: drains Channel.ICAT from the outbox to the broker, oldest first."""

    def __init__(
        self,
        store: OutboxStore,
        brokers: Sequence[BrokerAddress],
        destination: str,
        login: str | None = None,
        passcode: str | None = None,
        heartbeat_ms: int = 5000,
        window: int = 64,
        connect_timeout: float = 5.0,
        receipt_timeout: float = 30.0,
        idle_poll: float = 1.0,
        ca_file: str = "",
    ) -> None:
        super().__init__(name="stomp-sender", daemon=True)
        self.store = store
        self.addresses = [(broker.host, broker.port) for broker in brokers]
        self.tls = {(broker.host, broker.port) for broker in brokers if broker.tls}
        """The addresses reached over TLS (`ssl://` entries of queueURLs)."""
        self.ca_file = ca_file
        """`queueCAFile`; "" = the system's default CAs."""
        self.destination = destination
        """As icatcore.config normalised it, e.g. `/queue/icatIngest`."""
        self._login = login or None
        self._passcode = passcode or None
        self.heartbeat_ms = heartbeat_ms
        self.window = max(1, window)
        self.connect_timeout = connect_timeout
        self.receipt_timeout = receipt_timeout
        self.idle_poll = idle_poll
        self.link = BrokerLink(self.addresses)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._status_lock = threading.Lock()
        self._connected = False
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._last_delivery: float | None = None
        self._delivered = 0
        self._in_flight: dict[str, tuple[str, float]] = {}
        """receipt id -> (message id, monotonic time sent), in sending order."""
        self._conn: stomp.Connection12 | None = None
        self._sent_seq = 0
        """Outbox position of the last message sent on this connection."""
        self._events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.confirmed: deque[tuple[str, float]] = deque(maxlen=CONFIRMED_KEPT)
        """(message id, time) of what the broker confirmed; the ingester watch takes them."""

    # --- interface for Delivery ---------------------------------------------------------

    def wake(self) -> None:
        """A message was put: look at the outbox now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sending; what is not confirmed stays in the outbox for the next start."""
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def status(self) -> StompLinkStatus:
        with self._status_lock:
            host, port = self.link.address
            return StompLinkStatus(
                connected=self._connected,
                address=f"{host}:{port}",
                last_error=self._last_error,
                failing_since=self._failing_since,
                last_delivery=self._last_delivery,
                delivered=self._delivered,
                in_flight=len(self._in_flight),
            )

    # --- the worker -----------------------------------------------------------------------

    def run(self) -> None:
        self.link.connect()
        try:
            while not self._stopping.is_set():
                if self.link.connecting.is_active:
                    self._try_connect()
                elif self.link.backing_off.is_active:
                    self._stopping.wait(self.link.delay)
                    if not self._stopping.is_set():
                        self.link.retry()
                elif self.link.connected.is_active:
                    self._deliver_while_connected()
        except Exception:  # pragma: no cover - a bug; say so loudly, the outbox keeps all
            log.exception("STOMP sender stopped by an unexpected error")
            self._record_failure("internal error in the STOMP sender (see the log)")
        finally:
            self._close_connection()
            with contextlib.suppress(Exception):
                self.link.stop()

    def _address_text(self) -> str:
        host, port = self.link.address
        return f"{host}:{port}"

    def _record_failure(self, text: str) -> None:
        """Logged when the trouble changes, not at every retry (an outage would fill the
        log with the same line)."""
        with self._status_lock:
            repeated = text == self._last_error
            self._connected = False
            self._last_error = text
            if self._failing_since is None:
                self._failing_since = time.time()
        if repeated:
            log.debug("%s", text)
        else:
            log.warning("%s", text)

    def _try_connect(self) -> None:
        host, port = self.link.address
        where = f"{host}:{port}"
        log.debug("connecting to broker %s", where)
        # A plain TCP probe first: stomp.py swallows the reason a socket failed, and the
        # reason ("refused", "timed out") is what a scientist needs to read in Status.
        tls = (host, port) in self.tls
        try:
            probe = socket.create_connection((host, port), timeout=self.connect_timeout)
        except ConnectionRefusedError:
            self._connect_failed(f"broker {where} refused the connection")
            return
        except TimeoutError:
            self._connect_failed(f"broker {where} did not answer within {self.connect_timeout:g} s")
            return
        except OSError as error:
            reason = error.strerror or type(error).__name__
            self._connect_failed(f"cannot reach broker {where}: {reason}")
            return
        with probe:
            # The same for TLS: stomp.py would only say "connect failed", not that the
            # broker's certificate was refused, which the operator can mend.
            refused = self._tls_handshake(probe, host, where) if tls else None
        if refused is not None:
            self._connect_failed(refused)
            return

        events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        listener = _Listener(events, self._wake)
        conn = stomp.Connection12(
            [(host, port)],
            reconnect_attempts_max=1,
            reconnect_sleep_initial=0.0,
            reconnect_sleep_jitter=0.0,
            timeout=self.connect_timeout,
            heartbeats=(self.heartbeat_ms, self.heartbeat_ms),
            # No content-length: ActiveMQ then makes a JMS TextMessage, as for the
            # pyicat-plus (stompest) client the ICAT ingester is used to.
            auto_content_length=False,
        )
        if tls:
            # PROTOCOL_TLS_CLIENT (stomp.py's default): certificate and host name checked.
            conn.set_ssl(for_hosts=[(host, port)], ca_certs=self.ca_file or None, verify=True)
        conn.set_listener("outbox", listener)
        try:
            conn.connect(self._login, self._passcode, wait=False)
        except Exception as error:
            with contextlib.suppress(Exception):
                conn.disconnect()
            self._connect_failed(f"cannot connect to broker {where} ({type(error).__name__})")
            return
        deadline = time.monotonic() + self.connect_timeout
        while not listener.connected.wait(0.05):
            refused = _first_error(events)
            if refused is not None or time.monotonic() > deadline or self._stopping.is_set():
                with contextlib.suppress(Exception):
                    conn.disconnect()
                if refused is not None:
                    self._connect_failed(f"broker {where} refused the login: {refused}")
                elif not self._stopping.is_set():
                    self._connect_failed(
                        f"broker {where} did not complete the STOMP handshake within "
                        f"{self.connect_timeout:g} s"
                    )
                else:
                    self.link.connection_failed()
                return
        self._conn = conn
        self._events = events
        with self._status_lock:
            self._connected = True
            self._last_error = None
            self._failing_since = None
        self.link.connection_succeeded()
        log.info("connected to broker %s, sending to %s", where, self.destination)

    def _tls_handshake(self, sock: socket.socket, host: str, where: str) -> str | None:
        """A TLS handshake on the probe socket, as stomp.py will do it; None if it worked,
        else what to tell the operator."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            return f"property queueCAFile: cannot read {self.ca_file} ({reason})"
        try:
            context.wrap_socket(sock, server_hostname=host).close()
        except ssl.SSLCertVerificationError as error:
            reason = (error.verify_message or error.reason or "not trusted").rstrip(".")
            where_ca = f"CA file {self.ca_file}" if self.ca_file else "the system's CAs"
            return (
                f"broker {where}: TLS certificate refused ({reason}; {where_ca}): check queueCAFile"
            )
        except ssl.SSLError as error:
            reason = error.reason or type(error).__name__
            return f"broker {where}: TLS handshake failed ({reason}): is it an ssl:// port?"
        except TimeoutError:
            return (
                f"broker {where}: no TLS handshake within {self.connect_timeout:g} s: "
                "is it an ssl:// port?"
            )
        except OSError as error:
            reason = error.strerror or type(error).__name__
            return f"broker {where}: TLS handshake failed ({reason}): is it an ssl:// port?"
        return None

    def _connect_failed(self, text: str) -> None:
        self._record_failure(text)
        self.link.connection_failed()

    def _deliver_while_connected(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                self._handle_events()
                sent = self._send_more()
                self._check_receipt_timeout()
                if not sent:
                    self._wake.wait(self.idle_poll)
        except _LinkDown as down:
            self._close_connection()
            self._record_failure(str(down))
            if not self._stopping.is_set():
                self.link.connection_lost()
        except OutboxUnavailable as error:
            # The outbox itself failed: keep the link, retry after a pause.
            self._record_failure(str(error))
            self._stopping.wait(1.0)

    def _handle_events(self) -> None:
        confirmed: list[str] = []
        down: str | None = None
        while True:
            try:
                kind, value = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "receipt":
                with self._status_lock:
                    entry = self._in_flight.pop(value, None)
                if entry is not None:
                    confirmed.append(entry[0])
            elif kind == "error":
                down = f"broker {self._address_text()} reported an error: {value}"
            elif kind == "disconnected" and down is None:
                down = f"lost the connection to broker {self._address_text()}"
        if confirmed:
            self.store.confirm_many(confirmed)
            log.info(
                "broker %s confirmed message %s",
                self._address_text(),
                ", ".join(confirmed),
                extra={"message_ids": confirmed},
            )
            self.confirmed.extend((message_id, time.time()) for message_id in confirmed)
            with self._status_lock:
                self._delivered += len(confirmed)
                self._last_delivery = time.time()
        if down is not None:
            raise _LinkDown(down)

    def _send_more(self) -> bool:
        room = self.window - len(self._in_flight)
        if room <= 0 or self._conn is None:
            return False
        candidates = self.store.pending_after(Channel.ICAT, self._sent_seq, limit=room)
        for seq, message in candidates:
            self._send(message)
            self._sent_seq = seq
        return bool(candidates)

    def _send(self, message: OutboxMessage) -> None:
        assert self._conn is not None
        receipt = f"r-{message.id}-{time.monotonic_ns()}"
        with self._status_lock:
            self._in_flight[receipt] = (message.id, time.monotonic())
        try:
            self._conn.send(
                self.destination,
                message.body,
                headers={"persistent": "true", MESSAGE_ID_HEADER: message.id},
                receipt=receipt,
            )
        except Exception as error:
            raise _LinkDown(
                f"lost the connection to broker {self._address_text()} while sending "
                f"({type(error).__name__})"
            ) from error

    def _check_receipt_timeout(self) -> None:
        with self._status_lock:
            oldest = next(iter(self._in_flight.values()), None)
        if oldest is not None and time.monotonic() - oldest[1] > self.receipt_timeout:
            raise _LinkDown(
                f"broker {self._address_text()} sent no receipt within {self.receipt_timeout:g} s"
            )

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._sent_seq = 0  # unconfirmed messages are sent again on the next connection
        with self._status_lock:
            self._in_flight.clear()
            self._connected = False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()


def _first_error(events: queue.SimpleQueue[tuple[str, str]]) -> str | None:
    """An ERROR frame or a dropped connection during the STOMP handshake."""
    while True:
        try:
            kind, value = events.get_nowait()
        except queue.Empty:
            return None
        if kind == "error":
            return value
        if kind == "disconnected":
            return "the broker closed the connection"
