"""`icat-servers`: register the ICAT servers in Tango, run them on an embedded Tango database.

Subcommands are added in `build_parser` by one `_add_<name>` function each,
which sets `handler` (a function of the parsed arguments returning the exit
status), so a new subcommand is one function and one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from icat_servers.adapters import operator_cli, registration
from icat_servers.adapters.embedded_db import (
    EmbeddedDatabase,
    EmbeddedDatabaseError,
    default_state_dir,
)

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2  # the registration files are wrong (argparse uses 2 for bad usage too)
EXIT_NOT_RUNNING = 3  # `database status`: not running (the LSB status convention)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; add a subcommand with one more `_add_...(commands)` line."""
    parser = argparse.ArgumentParser(
        prog="icat-servers",
        description="Register the ICAT servers (MetaExperiment, MetadataManager) in a Tango "
        "database, and run an embedded Tango database where there is no TANGO_HOST.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_up(commands)
    _add_down(commands)
    _add_register(commands)
    _add_database(commands)
    _add_demo(commands)
    operator_cli.add_status(commands)
    operator_cli.add_outbox(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


# -- up, down ---------------------------------------------------------------------------


def _add_up(commands: Any) -> None:
    parser = commands.add_parser(
        "up",
        help="start the servers on the embedded Tango database, ready for Jive, BLISS, scripts",
        description="Start the embedded Tango database of $ICAT_SERVERS_STATE (or reuse the "
        "running one), register the files in it, start every server they name and, with "
        "--broker, a local ActiveMQ. What it starts is recorded for 'icat-servers down'; run "
        "twice, it reuses what runs. Prints 'export TANGO_HOST=...' on stdout, so "
        'eval "$(icat-servers up)" sets it in the shell.',
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="registration YAML (default: the shipped examples/id00.yml)",
    )
    parser.add_argument(
        "--broker", action="store_true", help="also start a local ActiveMQ (needs java)"
    )
    parser.set_defaults(handler=_up)


def _up(args: argparse.Namespace) -> int:
    from icat_servers.adapters import stack

    files: list[Path] = args.files or [stack.EXAMPLE]
    if not args.files and not stack.EXAMPLE.is_file():
        print(
            f"icat-servers up: the default example {stack.EXAMPLE} is missing from this "
            "installation: give a registration FILE, or reinstall icat-servers",
            file=sys.stderr,
        )
        return EXIT_INVALID
    state = default_state_dir()
    if os.environ.get("TANGO_HOST", "").strip():
        print(
            f"note: TANGO_HOST={os.environ['TANGO_HOST'].strip()} is set; up uses the embedded "
            f"database of {state} instead, never that one",
            file=sys.stderr,
        )
    try:
        running = stack.up(files, state_dir=state, broker=args.broker)
    except registration.RegistrationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except (stack.UpError, EmbeddedDatabaseError) as exc:
        print(
            f"icat-servers up: {exc}\n(what started is recorded: icat-servers down stops it)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(
        f"up: state in {state}; for Jive, BLISS or a script, export the line below "
        '(or run: eval "$(icat-servers up)"); stop with: icat-servers down',
        file=sys.stderr,
    )
    print(f"export TANGO_HOST={running.tango_host}")
    return EXIT_OK


def _add_down(commands: Any) -> None:
    parser = commands.add_parser(
        "down",
        help="stop what 'icat-servers up' started, and nothing else",
        description="Stop, by the PIDs 'icat-servers up' recorded in $ICAT_SERVERS_STATE, the "
        "servers, the broker and the embedded database it started. A database or server "
        "that up found already running is left running.",
    )
    parser.set_defaults(handler=_down)


def _down(args: argparse.Namespace) -> int:
    from icat_servers.adapters import stack

    try:
        stack.down(state_dir=default_state_dir())
    except (RuntimeError, EmbeddedDatabaseError) as exc:
        print(f"icat-servers down: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# -- register -------------------------------------------------------------------------


def _add_register(commands: Any) -> None:
    parser = commands.add_parser(
        "register",
        help="load beamline YAML files into the Tango database of TANGO_HOST",
        description="Validate the YAML files, show what differs from the Tango database of "
        "TANGO_HOST (or of the embedded database when TANGO_HOST is not set) and write it. "
        "Running it again changes nothing.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML file")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="show the changes, write nothing and start nothing (with no TANGO_HOST and no "
        "embedded database running: the changes to an empty database)",
    )
    parser.set_defaults(handler=_register)


def _register(args: argparse.Namespace) -> int:
    try:
        wanted = registration.plan(args.files)
    except registration.RegistrationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    import tango

    where = f"TANGO_HOST={os.environ.get('TANGO_HOST', '').strip() or '(embedded)'}"
    try:
        db, where = _database_to_compare() if args.dry_run else _database()
        found = registration.changes(wanted, db)
        warnings = registration.notes(wanted, db)
    except EmbeddedDatabaseError as exc:
        print(f"cannot start the embedded Tango database: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except tango.DevFailed as exc:
        print(
            f"cannot reach the Tango database at {where}: {_reason(exc)}\n"
            "Check that the database runs and TANGO_HOST names it, or unset TANGO_HOST "
            "to use the embedded database (icat-servers database start).",
            file=sys.stderr,
        )
        return EXIT_FAILED
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not found:
        print(f"nothing to change in the Tango database at {where}")
        return EXIT_OK
    for change in found:
        print(change)
    count = f"{len(found)} change{'s' if len(found) != 1 else ''}"
    if args.dry_run:
        print(f"dry run: {count} not written to {where}")
        return EXIT_OK
    try:
        registration.apply(found, db)
    except tango.DevFailed as exc:
        print(
            f"writing to the Tango database at {where} failed: {_reason(exc)}; the changes "
            "before it were written, run the command again once the database is fixed",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"wrote {count} to {where}")
    return EXIT_OK


def _database() -> tuple[Any, str]:
    """The Tango database of TANGO_HOST, or the embedded one (started if needed)."""
    import tango

    tango_host = os.environ.get("TANGO_HOST", "").strip()
    if tango_host:
        return tango.Database(), f"TANGO_HOST={tango_host}"
    embedded = EmbeddedDatabase(default_state_dir())
    tango_host = embedded.start()
    print(
        f"TANGO_HOST is not set: using the embedded Tango database, TANGO_HOST={tango_host} "
        "(export it for the servers; 'icat-servers database stop' stops it)",
        file=sys.stderr,
    )
    host, port = tango_host.rsplit(":", 1)
    return tango.Database(host, int(port)), f"TANGO_HOST={tango_host}"


def _database_to_compare() -> tuple[Any, str]:
    """For a dry run: the database of TANGO_HOST, the embedded one if it runs, else an
    empty one. Starts nothing and writes nothing (not even the state directory)."""
    import tango

    tango_host = os.environ.get("TANGO_HOST", "").strip()
    if tango_host:
        return tango.Database(), f"TANGO_HOST={tango_host}"
    state = default_state_dir()
    running = EmbeddedDatabase(state).status()
    if running is not None:
        print(
            f"TANGO_HOST is not set: comparing with the embedded Tango database, "
            f"TANGO_HOST={running.tango_host}",
            file=sys.stderr,
        )
        return tango.Database(*running.tango_host.split(":")), f"TANGO_HOST={running.tango_host}"
    print(
        f"TANGO_HOST is not set and no embedded Tango database runs in {state}: comparing "
        "with an empty database (nothing started; 'icat-servers up' or 'icat-servers database "
        "start' starts one)",
        file=sys.stderr,
    )
    return EmptyDatabase(), "an empty Tango database"


class EmptyDatabase:
    """A Tango database with nothing registered, for a dry run when none runs: reads
    find nothing, and writing is refused (a dry run never writes)."""

    def get_device_info(self, name: str) -> Any:
        import tango

        error = tango.DevError()
        error.reason = "DB_DeviceNotDefined"
        error.desc = f"device {name} is not defined in the database"
        raise tango.DevFailed(error)

    def get_class_property(self, name: str, props: list[str]) -> dict[str, Sequence[str]]:
        return {}

    def get_device_property(self, name: str, props: list[str]) -> dict[str, Sequence[str]]:
        return {}

    def _refuse(self, *args: Any) -> None:
        raise RuntimeError("a dry run writes nothing")

    add_device = put_class_property = delete_class_property = _refuse
    put_device_property = delete_device_property = _refuse


def _reason(exc: BaseException) -> str:
    """The first DevError's description: the part of a DevFailed a person can act on."""
    errors = getattr(exc, "args", ())
    if errors and hasattr(errors[0], "desc"):
        return f"{errors[0].reason}: {errors[0].desc.strip()}"
    return str(exc)


# -- database -------------------------------------------------------------------------


def _add_database(commands: Any) -> None:
    parser = commands.add_parser(
        "database",
        help="start, stop or show the embedded Tango database (pytango-db)",
        description="An embedded Tango database on loopback for machines with no TANGO_HOST. "
        "Its state (sqlite file, PID, port, log) is in $ICAT_SERVERS_STATE, "
        "else ~/.local/state/icat-servers.",
    )
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to listen on (default: the last one used, kept in the state directory, "
        "if free; else a free one)",
    )
    parser.set_defaults(handler=_database_command)


def _database_command(args: argparse.Namespace) -> int:
    embedded = EmbeddedDatabase(default_state_dir(), port=args.port)
    try:
        if args.action == "start":
            database, started = embedded.start_or_reuse()
            if not started:
                print(
                    f"the embedded Tango database already runs (pid {database.pid}, state in "
                    f"{embedded.state_dir})",
                    file=sys.stderr,
                )
            print(f"TANGO_HOST={database.tango_host}")
            return EXIT_OK
        if args.action == "stop":
            pid = embedded.stop()
            print(
                f"stopped the embedded Tango database (pid {pid})"
                if pid is not None
                else "the embedded Tango database was not running"
            )
            return EXIT_OK
    except EmbeddedDatabaseError as exc:
        print(f"embedded Tango database: {exc}", file=sys.stderr)
        return EXIT_FAILED
    running = embedded.status()
    if running is None:
        print(
            f"not running (state in {embedded.state_dir}); start it with "
            "'icat-servers database start'"
        )
        return EXIT_NOT_RUNNING
    print(
        f"running: TANGO_HOST={running.tango_host} pid {running.pid} "
        f"(state in {embedded.state_dir})"
    )
    return EXIT_OK


# -- demo -----------------------------------------------------------------------------


def _add_demo(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run a narrated beamline session on a stack of its own",
        description="Start a Tango database, a local ActiveMQ and both servers of its own "
        "(in $ICAT_SERVERS_STATE/demo, emptied first), register devices of its own (id00/*/demo), "
        "drive two datasets through them and read the broker's queue back. It never touches "
        "TANGO_HOST, your embedded database or your servers.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep what an earlier demo left in its state directory (outboxes, database)",
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from icat_servers.adapters import demo

    return demo.run(keep=args.keep)


if __name__ == "__main__":  # last: every _add_... above must be defined first
    sys.exit(main())
