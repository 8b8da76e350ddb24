"""What operators see and mend, through the device that owns the outbox.

Both devices inherit `OutboxCommands`: commands to list, show, resend, export and drop
the messages of the device's outbox (JSON in, JSON out, so that Jive, a script on
another host and `icat-servers outbox` all use them), a summary for `icat-servers
status`, and the ingester watch (`waitingInBroker`, `ingesterConsumers`, a Status
line). The mixin needs only the device's outlet (`outbox_outlet`); the functions
above it are pure, so the CLI and the tests use them without Tango.

Nothing here deletes a message except `OutboxDrop`, which names it. The API key is
never in what these commands return: URLs show `***` in its place.
"""

from __future__ import annotations

import datetime
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import tango
from tango.server import attribute, command

from icat_servers.adapters import ingester
from icat_servers.adapters.delivery import Delivery
from icat_servers.adapters.icatplus import SecretMask
from icat_servers.adapters.outbox_store import OutboxStore, OutboxUnavailable, SetAside
from icat_servers.adapters.tango import common
from icat_servers.icatcore.outbox import Channel, Kind, OutboxMessage

TNS = "{http://www.esrf.fr/icat}"
TEXT_SHOWN = 60
ALL = "all"
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# -- pure: a message in words, as sent, as a file ---------------------------------------


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def what(message: OutboxMessage) -> str:
    """The dataset name, the proposal, or the start of the logbook text."""
    try:
        if message.channel is Channel.ICAT:
            root = ET.fromstring(message.body)
            tag = "name" if message.kind is Kind.DATASET else "experiment"
            found = root.findtext(f"{TNS}{tag}")
            return found if found is not None else ""
        body = json.loads(message.body)
    except (ET.ParseError, ValueError):
        return "(unreadable body)"
    if message.kind is Kind.IMAGE:
        data_url = str(body.get("base64", ""))
        return "image " + data_url[5:].split(";", 1)[0] if data_url.startswith("data:") else "image"
    texts = [
        str(part.get("text", "")) for part in body.get("content", []) if isinstance(part, dict)
    ]
    text = " ".join(" ".join(texts).split())
    return text if len(text) <= TEXT_SHOWN else text[: TEXT_SHOWN - 1] + "…"


def entry(message: OutboxMessage, attempts: int, last_error: str) -> dict[str, Any]:
    return {
        "id": message.id,
        "kind": message.kind.value,
        "what": what(message),
        "created": _iso(message.created),
        "attempts": attempts,
        "last_error": last_error,
    }


def as_sent(message: OutboxMessage, icatplus_server: str, mask: SecretMask) -> dict[str, Any]:
    """Where the message goes and the bytes it carries, with the API key masked."""
    if message.channel is Channel.ICAT:
        return {
            "to": f"STOMP SEND {message.destination}",
            "headers": {"persistent": "true", "icat-message-id": message.id},
            "body": message.body.decode(errors="replace"),
        }
    query = "&".join(f"{k}={v}" for k, v in message.query)
    path = message.destination.replace("{api_key}", "***").lstrip("/")
    url = f"{icatplus_server or '(icatplus_server is empty)'}/{path}"
    return {
        "to": mask(f"POST {url}" + (f"?{query}" if query else "")),
        "headers": {"Content-Type": message.content_type},
        "body": mask(message.body.decode(errors="replace")),
    }


def export_name(position: int, message: OutboxMessage) -> str:
    """`0001-dataset-sample_0003-<id>.xml`: sorted by name is the order they were made."""
    label = UNSAFE.sub("_", what(message))[:40].strip("_") or message.kind.value
    extension = "xml" if message.channel is Channel.ICAT else "json"
    return f"{position:04d}-{message.kind.value}-{label}-{message.id}.{extension}"


def export_content(message: OutboxMessage, mask: SecretMask) -> str:
    """The XML as the ingester reads it (what `icat-store-from-file` sends), or the
    logbook request as JSON (path with `{api_key}` left as a placeholder)."""
    if message.channel is Channel.ICAT:
        return message.body.decode(errors="replace")
    return mask(
        json.dumps(
            {
                "id": message.id,
                "kind": message.kind.value,
                "created": _iso(message.created),
                "method": "POST",
                "path": message.destination,
                "query": dict(message.query),
                "content_type": message.content_type,
                "body": json.loads(message.body),
            },
            indent=2,
            ensure_ascii=False,
        )
    )


def messages_in_order(store: OutboxStore) -> list[tuple[OutboxMessage, SetAside | None]]:
    """Waiting and set-aside messages, oldest first by creation time."""
    found: list[tuple[OutboxMessage, SetAside | None]] = [
        (m, None) for m in store.waiting_messages()
    ]
    found += [(aside.message, aside) for aside in store.set_aside_entries()]
    return sorted(found, key=lambda pair: pair[0].created)


# -- the mixin the two devices inherit ----------------------------------------------------


class OutboxCommands:
    """Outbox commands, the ingester watch and its attributes, for either device."""

    def outbox_outlet(self) -> Delivery | None:
        """The device's outlet (outbox and senders), None when the outbox is not open."""
        outlet: Delivery | None = getattr(self, "outlet", None)
        return outlet

    def outbox_store(self) -> OutboxStore:
        outlet = self.outbox_outlet()
        if outlet is None:
            common.fail(
                "ICAT_Outbox",
                f"the outbox of {self.get_name()} is not open: see its Status, fix it, "  # type: ignore[attr-defined]
                "then call Reset",
                "Outbox",
            )
        return outlet.store

    def outbox_mask(self) -> SecretMask:
        outlet = self.outbox_outlet()
        return SecretMask(outlet.settings.api_key if outlet is not None else "")

    def outbox_unknown(self, message_id: str) -> str:
        return (
            f"no message {message_id!r} in the outbox of {self.get_name()}: "  # type: ignore[attr-defined]
            "list them with OutboxList (icat-servers outbox DEVICE list)"
        )

    # -- commands ---------------------------------------------------------------------

    @command(dtype_out=str)
    def OutboxList(self) -> str:
        """JSON: {"waiting": [...], "set_aside": [...]}, each {id, kind, what, created,
        attempts, last_error}, oldest first."""
        with _outbox_errors("OutboxList"):
            store = self.outbox_store()
            outlet = self.outbox_outlet()
            health = outlet.health() if outlet is not None else None
            errors = {
                Channel.ICAT: (health.broker_error if health else None) or "",
                Channel.ICATPLUS: (health.icatplus_error if health else None) or "",
            }
            waiting = [
                entry(m, store.attempts(m.id), errors[m.channel]) for m in store.waiting_messages()
            ]
            aside = [
                {
                    **entry(a.message, store.attempts(a.message.id), a.error),
                    "set_aside": _iso(a.set_aside_at),
                }
                for a in store.set_aside_entries()
            ]
            return self.outbox_mask()(json.dumps({"waiting": waiting, "set_aside": aside}))

    @command(dtype_in=str, dtype_out=str)
    def OutboxShow(self, message_id: str) -> str:
        """JSON: the message as it will be sent (destination, headers, body); key masked."""
        with _outbox_errors("OutboxShow"):
            store = self.outbox_store()
            found = store.find(message_id.strip())
            if found is None:
                common.fail("ICAT_InvalidInput", self.outbox_unknown(message_id), "OutboxShow")
            message = found.message if isinstance(found, SetAside) else found
            outlet = self.outbox_outlet()
            server = outlet.settings.icatplus_server if outlet is not None else ""
            shown = {
                "id": message.id,
                "kind": message.kind.value,
                "state": "set aside" if isinstance(found, SetAside) else "waiting",
                "created": _iso(message.created),
                **({"refused": found.error} if isinstance(found, SetAside) else {}),
                **as_sent(message, server, self.outbox_mask()),
            }
            return self.outbox_mask()(json.dumps(shown, ensure_ascii=False))

    @command(dtype_in=str, dtype_out=str)
    def OutboxResend(self, which: str) -> str:
        """Set-aside messages back to the waiting queue: one id, or "all". JSON: the ids
        moved, in the order they will be sent."""
        with _outbox_errors("OutboxResend"):
            store = self.outbox_store()
            wanted = which.strip()
            if not wanted:
                common.fail(
                    "ICAT_InvalidInput",
                    'OutboxResend needs a message id or "all"',
                    "OutboxResend",
                )
            try:
                moved = store.resend(None if wanted.lower() == ALL else [wanted])
            except KeyError:
                common.fail(
                    "ICAT_InvalidInput",
                    f"message {wanted!r} is not set aside in the outbox of {self.get_name()}: "  # type: ignore[attr-defined]
                    "only set-aside messages can be resent (see OutboxList)",
                    "OutboxResend",
                )
            outlet = self.outbox_outlet()
            if outlet is not None:
                for sender in (outlet.stomp_sender, outlet.icatplus_sender):
                    if sender is not None:
                        sender.wake()
            return json.dumps({"resent": moved})

    @command(dtype_out=str)
    def OutboxExport(self) -> str:
        """JSON: {"files": [{"name", "content", "created", "state"}]}, every waiting and
        set-aside message: XML as `icat-store-from-file` reads it, JSON for the logbook.
        The caller writes them (the device's disk may be another host's)."""
        with _outbox_errors("OutboxExport"):
            mask = self.outbox_mask()
            files = [
                {
                    "name": export_name(position, message),
                    "content": export_content(message, mask),
                    "created": message.created,
                    "state": "set aside" if aside is not None else "waiting",
                }
                for position, (message, aside) in enumerate(
                    messages_in_order(self.outbox_store()), start=1
                )
            ]
            return json.dumps({"files": files}, ensure_ascii=False)

    @command(dtype_in=str, dtype_out=str)
    def OutboxDrop(self, message_id: str) -> str:
        """Delete one message for good, named by its id (the only way anything is deleted)."""
        with _outbox_errors("OutboxDrop"):
            wanted = message_id.strip()
            if not wanted or wanted.lower() == ALL:
                common.fail(
                    "ICAT_InvalidInput",
                    "OutboxDrop deletes one message named by its id; nothing was dropped",
                    "OutboxDrop",
                )
            try:
                was = self.outbox_store().drop(wanted)
            except KeyError:
                common.fail("ICAT_InvalidInput", self.outbox_unknown(wanted), "OutboxDrop")
            common.log.warning("outbox: message %s (%s) dropped by an operator", wanted, was)
            return json.dumps({"dropped": wanted, "was": was})

    @command(dtype_out=str)
    def OutboxSummary(self) -> str:
        """JSON for `icat-servers status`: counts, the oldest age, the broker link and
        the ingester."""
        outlet = self.outbox_outlet()
        if outlet is None:
            return json.dumps({"open": False})
        health = outlet.health()
        view = self.ingester_view()
        return self.outbox_mask()(
            json.dumps(
                {
                    "open": True,
                    "waiting": health.undelivered,
                    "oldest_age": round(health.oldest_age(time.time()), 1),
                    "set_aside": health.set_aside,
                    "broker": {
                        "enabled": health.icat_enabled,
                        "address": health.broker_address,
                        "connected": health.broker_connected,
                        "error": health.broker_error,
                    },
                    "ingester": {
                        "waiting_in_broker": view.waiting_in_broker,
                        "consumers": view.consumers,
                        "warning": view.warning(),
                    },
                }
            )
        )

    # -- the ingester -----------------------------------------------------------------

    @attribute(dtype=int, doc="this device's confirmed messages still in the queue; -1 unknown")
    def waitingInBroker(self) -> int:
        return self.ingester_view().waiting_in_broker

    @attribute(dtype=int, doc="consumers of the queue from Jolokia; -1 unknown or jolokiaPort 0")
    def ingesterConsumers(self) -> int:
        return self.ingester_view().consumers

    def ingester_view(self) -> ingester.IngesterView:
        watch = self.ingester_watch()
        return watch.view() if watch is not None else ingester.IngesterView()

    def ingester_line(self) -> str:
        """The Status line of the ingester watch ("" when all is well); starts the watch."""
        view = self.ingester_view()
        return view.warning()

    def ingester_watch(self) -> ingester.IngesterWatch | None:
        """The watch of the current outlet's queue; a new outlet gets a new watch."""
        outlet = self.outbox_outlet()
        current: tuple[Delivery, ingester.IngesterWatch] | None = getattr(
            self, "_ingester_watch", None
        )
        if current is not None and current[0] is outlet:
            return current[1]
        if current is not None:
            current[1].stop()
        sender = outlet.stomp_sender if outlet is not None else None
        if outlet is None or sender is None:
            self._ingester_watch = None
            return None
        for name in ("waitingInBroker", "ingesterConsumers"):
            self.set_change_event(name, True, False)  # type: ignore[attr-defined]
        settings = outlet.settings

        def where() -> tuple[str, int]:
            host, _, port = (sender.status().address or "").rpartition(":")
            return host.strip("[]"), int(port)

        watch = ingester.watch(
            sender.confirmed,
            where,
            settings.queue,
            settings.ingester_grace_time,
            settings.jolokia_port,
            (settings.login or None, settings.passcode or None),
            on_change=self.ingester_changed,
        )
        self._ingester_watch: tuple[Delivery, ingester.IngesterWatch] | None = (outlet, watch)
        return watch

    def ingester_changed(self, view: ingester.IngesterView) -> None:
        """From the watch's thread: push the attributes' change events."""
        try:
            with tango.AutoTangoMonitor(self):
                self.push_change_event("waitingInBroker", view.waiting_in_broker)  # type: ignore[attr-defined]
                self.push_change_event("ingesterConsumers", view.consumers)  # type: ignore[attr-defined]
        except tango.DevFailed as error:
            common.log.warning("ingester events not pushed: %s", error.args[0].desc)


@contextmanager
def _outbox_errors(origin: str) -> Iterator[None]:
    """An outbox that fails while a command reads it: a Tango error that says so."""
    try:
        yield
    except OutboxUnavailable as error:
        common.fail("ICAT_Outbox", f"{error}. Nothing was changed.", origin)
