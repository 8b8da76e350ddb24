"""`icat-servers status` and `icat-servers outbox`: the operators' view, through Tango.

Both talk to the devices only (the Outbox* commands and Tango's own State and Status),
so they work from any host that reaches the Tango database of TANGO_HOST, or the
embedded one on this machine. `status` exits 1 when a device needs someone: FAULT or
unreachable, messages set aside, or messages older than its alarm level, so that
cron, Nagios or a shift screen can run it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from icat_servers.adapters.embedded_db import EmbeddedDatabase, default_state_dir

CLASSES = ("MetaExperiment", "MetadataManager")
DEFAULT_ALARM_AGE_S = 600.0
"""Messages older than this need someone, unless `oldestUndeliveredAge` declares a
max_alarm of its own."""
AGE_ATTRIBUTE = "oldestUndeliveredAge"
TIMEOUT_MS = 3000
EXIT_OK = 0
EXIT_ATTENTION = 1

GREEN, YELLOW, RED, BOLD, RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[1m", "\x1b[0m"
CLEAR = "\x1b[H\x1b[J"


class NoDatabase(RuntimeError):
    """No Tango database to ask: the text says which and what to do."""


def tango_host() -> str:
    """TANGO_HOST, else the embedded database's (not started here: nothing runs there)."""
    configured = os.environ.get("TANGO_HOST", "").strip()
    if configured:
        return configured
    running = EmbeddedDatabase(default_state_dir()).status()
    if running is None:
        raise NoDatabase(
            "TANGO_HOST is not set and the embedded Tango database is not running "
            f"(state in {default_state_dir()}): export TANGO_HOST, or start the servers' "
            "database with 'icat-servers database start'"
        )
    return running.tango_host


def proxy(host: str, device: str) -> Any:
    import tango

    found = tango.DeviceProxy(f"tango://{host}/{device}")
    found.set_timeout_millis(TIMEOUT_MS)
    return found


def reason(error: BaseException) -> str:
    errors = getattr(error, "args", ())
    if errors and hasattr(errors[0], "desc"):
        return " ".join(str(errors[0].desc).split())
    return str(error)


# -- status ---------------------------------------------------------------------------


@dataclass
class DeviceStatus:
    """One device as `status` shows it."""

    device: str
    device_class: str
    state: str = "UNREACHABLE"
    status: str = ""
    waiting: int | None = None
    oldest_age: float | None = None
    alarm_age: float = DEFAULT_ALARM_AGE_S
    set_aside: int | None = None
    broker: dict[str, Any] = field(default_factory=dict)
    ingester: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "class": self.device_class,
            "state": self.state,
            "status": self.status,
            "waiting": self.waiting,
            "oldest_age": self.oldest_age,
            "alarm_age": self.alarm_age,
            "set_aside": self.set_aside,
            "broker": self.broker,
            "ingester": self.ingester,
            "ok": self.ok,
            "problems": self.problems,
        }


def devices(host: str) -> list[tuple[str, str]]:
    """(device, class) of every MetaExperiment and MetadataManager in the database."""
    import tango

    name, port = host.rsplit(":", 1)
    database = tango.Database(name, int(port))
    found: list[tuple[str, str]] = []
    for device_class in CLASSES:
        names = database.command_inout("DbGetDeviceList", ["*", device_class])
        found += [(str(n).lower(), device_class) for n in names]
    return sorted(found)


def why_unreachable(host: str, device: str, error: BaseException) -> str:
    """What the Tango database knows: a server not running, or one that does not answer."""
    import tango

    name, port = host.rsplit(":", 1)
    try:
        info = tango.Database(name, int(port)).get_device_info(device)
    except tango.DevFailed:
        return reason(error)
    if not info.exported:
        return f"not running: start its server {info.ds_full_name}"
    return (
        f"its server {info.ds_full_name} (pid {info.pid} on {info.host}) does not answer: "
        f"{reason(error)}"
    )


def alarm_age(device: Any) -> float:
    """The max_alarm of `oldestUndeliveredAge` when the device declares one, else 600 s."""
    import tango

    try:
        declared = device.get_attribute_config(AGE_ATTRIBUTE).alarms.max_alarm
        return float(declared)
    except (tango.DevFailed, ValueError, TypeError, AttributeError):
        return DEFAULT_ALARM_AGE_S


def look_at(host: str, device: str, device_class: str) -> DeviceStatus:
    import tango

    seen = DeviceStatus(device, device_class)
    try:
        found = proxy(host, device)
        seen.state = str(found.state())
        seen.status = str(found.status())
    except tango.DevFailed as error:
        seen.status = why_unreachable(host, device, error)
        seen.problems.append("cannot be reached")
        return seen
    if seen.state == "FAULT":
        seen.problems.append("FAULT")
    try:
        summary = json.loads(found.command_inout("OutboxSummary"))
    except tango.DevFailed as error:
        seen.problems.append(f"no outbox summary: {reason(error)}")
        return seen
    if not summary.get("open"):
        if seen.state != "FAULT":  # a FAULT's Status already says why
            seen.problems.append("outbox not open")
        return seen
    seen.waiting = int(summary["waiting"])
    seen.oldest_age = float(summary["oldest_age"])
    seen.set_aside = int(summary["set_aside"])
    seen.broker = dict(summary["broker"])
    seen.ingester = dict(summary["ingester"])
    seen.alarm_age = alarm_age(found)
    if seen.set_aside:
        seen.problems.append(f"{seen.set_aside} set aside")
    if seen.waiting and seen.oldest_age > seen.alarm_age:
        seen.problems.append(f"oldest waiting {seen.oldest_age:.0f} s > {seen.alarm_age:g} s")
    return seen


def _paint(text: str, colour: str, colours: bool) -> str:
    return f"{colour}{text}{RESET}" if colours else text


def line(seen: DeviceStatus, width: int, colours: bool) -> str:
    """One line per device: state, first Status line, outbox, broker, ingester."""
    state_colour = {"FAULT": RED, "UNREACHABLE": RED, "ALARM": RED}.get(
        seen.state, YELLOW if seen.state in ("OFF", "UNKNOWN", "INIT") else GREEN
    )
    mark = _paint("ok  " if seen.ok else "FAIL", GREEN if seen.ok else RED + BOLD, colours)
    parts = [f"{mark} {seen.device:<{width}} {_paint(f'{seen.state:<11}', state_colour, colours)}"]
    first = seen.status.splitlines()[0] if seen.status else ""
    if seen.waiting is not None:
        waiting = f"{seen.waiting} waiting"
        if seen.waiting:
            waiting += f", oldest {seen.oldest_age:.0f} s"
        old = seen.waiting and (seen.oldest_age or 0) > seen.alarm_age
        parts.append(_paint(waiting, RED, colours) if old else waiting)
        aside = f"{seen.set_aside} set aside"
        parts.append(_paint(aside, RED, colours) if seen.set_aside else aside)
        parts.append(_broker(seen.broker, colours))
        parts.append(_ingester(seen.ingester, colours))
    elif seen.problems:
        parts.append(_paint("; ".join(seen.problems), RED, colours))
    parts.append(first)
    return " | ".join(parts)


def _broker(broker: dict[str, Any], colours: bool) -> str:
    if not broker.get("enabled"):
        return "broker off (queueURLs empty)"
    if broker.get("connected"):
        return f"broker {broker.get('address')} connected"
    return _paint(f"broker {broker.get('address')} down", YELLOW, colours)


def _ingester(ingester: dict[str, Any], colours: bool) -> str:
    waiting = ingester.get("waiting_in_broker", -1)
    consumers = ingester.get("consumers", -1)
    text = "ingester: " + (f"{waiting} in queue" if waiting >= 0 else "queue unknown")
    if consumers >= 0:
        text += f", {consumers} consumer{'s' if consumers != 1 else ''}"
    return _paint(text + " (late)", YELLOW, colours) if ingester.get("warning") else text


def status_round(host: str) -> list[DeviceStatus]:
    return [look_at(host, device, device_class) for device, device_class in devices(host)]


def show_status(seen: list[DeviceStatus], as_json: bool, colours: bool, out: TextIO) -> int:
    if as_json:
        for one in seen:
            print(json.dumps(one.as_json()), file=out)
    else:
        width = max((len(one.device) for one in seen), default=0)
        for one in seen:
            print(line(one, width, colours), file=out)
        if not seen:
            print("no MetaExperiment or MetadataManager in this Tango database", file=out)
    return EXIT_OK if all(one.ok for one in seen) else EXIT_ATTENTION


def add_status(commands: Any) -> None:
    parser = commands.add_parser(
        "status",
        help="one line per MetaExperiment and MetadataManager: state, outbox, broker, ingester",
        description="Every MetaExperiment and MetadataManager of the Tango database of "
        "TANGO_HOST (or of the embedded one). Exit 1 when a device is FAULT or cannot be "
        "reached, has messages set aside, or messages older than its alarm level "
        f"(oldestUndeliveredAge's max_alarm, else {DEFAULT_ALARM_AGE_S:g} s).",
    )
    parser.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    parser.add_argument("--json", action="store_true", help="one JSON object per device")
    parser.set_defaults(handler=status_command)


def status_command(args: argparse.Namespace) -> int:
    try:
        host = tango_host()
    except NoDatabase as error:
        print(error, file=sys.stderr)
        return EXIT_ATTENTION
    colours = sys.stdout.isatty() and not args.json and "NO_COLOR" not in os.environ
    import tango

    code = EXIT_OK
    try:
        while True:
            try:
                seen = status_round(host)
            except tango.DevFailed as error:
                print(
                    f"cannot read the Tango database at {host}: {reason(error)}; check that "
                    "it runs and that TANGO_HOST names it",
                    file=sys.stderr,
                )
                return EXIT_ATTENTION
            if args.watch and sys.stdout.isatty():
                sys.stdout.write(CLEAR)
                print(f"TANGO_HOST={host}  {time.strftime('%H:%M:%S')}  (Ctrl-C to stop)")
            code = show_status(seen, args.json, colours, sys.stdout)
            sys.stdout.flush()
            if not args.watch:
                return code
            time.sleep(max(0.2, args.interval))
    except KeyboardInterrupt:
        return code


# -- outbox ---------------------------------------------------------------------------


def add_outbox(commands: Any) -> None:
    parser = commands.add_parser(
        "outbox",
        help="list, show, resend, export or drop the messages of a device's outbox",
        description="Through the device that owns the outbox (its Outbox* commands), so it "
        "works from any host. Nothing is deleted except by 'drop ID'.",
    )
    parser.add_argument("device", metavar="DEVICE", help="e.g. id00/metadata/test")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="waiting and set-aside messages")
    show = actions.add_parser("show", help="one message as it will be sent (API key masked)")
    show.add_argument("id", metavar="ID")
    resend = actions.add_parser("resend", help="set-aside messages back to the waiting queue")
    which = resend.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID")
    which.add_argument("--all", action="store_true", help="every set-aside message, in order")
    export = actions.add_parser(
        "export", help="write every message as a file: XML for icat-store-from-file, JSON"
    )
    export.add_argument("directory", type=Path, metavar="DIR")
    drop = actions.add_parser("drop", help="delete one message for good")
    drop.add_argument("id", metavar="ID")
    parser.set_defaults(handler=outbox_command)


def outbox_command(args: argparse.Namespace) -> int:
    import tango

    try:
        device = proxy(tango_host(), args.device)
        action: Callable[[Any, argparse.Namespace], int] = ACTIONS[args.action]
        return action(device, args)
    except NoDatabase as error:
        print(error, file=sys.stderr)
    except tango.DevFailed as error:
        print(f"{args.device}: {reason(error)}", file=sys.stderr)
    except OSError as error:
        print(f"cannot write the export: {error}", file=sys.stderr)
    return EXIT_ATTENTION


def _call(device: Any, command: str, argument: str | None = None) -> Any:
    answer = (
        device.command_inout(command)
        if argument is None
        else device.command_inout(command, argument)
    )
    return json.loads(answer)


def _list(device: Any, args: argparse.Namespace) -> int:
    found = _call(device, "OutboxList")
    print(f"{args.device}: {len(found['waiting'])} waiting, {len(found['set_aside'])} set aside")
    for title, entries in (("waiting", found["waiting"]), ("set aside", found["set_aside"])):
        if not entries:
            continue
        print(f"{title}:")
        for one in entries:
            print(
                f"  {one['id']}  {one['kind']:<13} {one['created']}  "
                f"attempts {one['attempts']}  {one['what']}"
            )
            if one["last_error"]:
                print(f"      last error: {one['last_error']}")
    return EXIT_OK


def _show(device: Any, args: argparse.Namespace) -> int:
    found = _call(device, "OutboxShow", args.id)
    print(f"message {found['id']} ({found['kind']}, {found['state']}, created {found['created']})")
    if "refused" in found:
        print(f"refused: {found['refused']}")
    print(f"to: {found['to']}")
    for name, value in found["headers"].items():
        print(f"{name}: {value}")
    print()
    print(found["body"])
    return EXIT_OK


def _resend(device: Any, args: argparse.Namespace) -> int:
    moved = _call(device, "OutboxResend", "all" if args.all else args.id)["resent"]
    if not moved:
        print(f"{args.device}: nothing is set aside")
    for message_id in moved:
        print(f"back in the waiting queue: {message_id}")
    return EXIT_OK


def _export(device: Any, args: argparse.Namespace) -> int:
    files = _call(device, "OutboxExport")["files"]
    directory: Path = args.directory
    directory.mkdir(parents=True, exist_ok=True)
    written = write_export(directory, files)
    xml = sum(1 for f in files if f["name"].endswith(".xml"))
    print(
        f"{args.device}: {len(files)} messages in {directory} ({written} new): {xml} XML, "
        f"{len(files) - xml} JSON"
    )
    if xml:
        print(
            f"to send the XML yourself: icat-store-from-file '{directory}/*.xml' --queue HOST:PORT"
        )
    return EXIT_OK


def write_export(directory: Path, files: Sequence[dict[str, Any]]) -> int:
    """Write the files, each with its message's creation time as mtime (the order
    `icat-store-from-file` sends them in). An existing file with other content is an
    error; nothing is overwritten."""
    written = 0
    for one in files:
        path = directory / one["name"]
        content = str(one["content"]).encode()
        if path.exists():
            if path.read_bytes() != content:
                raise FileExistsError(f"{path} exists with other content: export to a new DIR")
            continue
        with path.open("xb") as out:
            out.write(content)
        os.utime(path, (float(one["created"]), float(one["created"])))
        written += 1
    return written


def _drop(device: Any, args: argparse.Namespace) -> int:
    found = _call(device, "OutboxDrop", args.id)
    print(f"dropped {found['dropped']} (it was {found['was']}); it will never be sent")
    return EXIT_OK


ACTIONS: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "list": _list,
    "show": _show,
    "resend": _resend,
    "export": _export,
    "drop": _drop,
}
