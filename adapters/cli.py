"""`icat-servers`: register the ICAT servers in Tango, and run an embedded Tango database.

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

from adapters import operator_cli, registration
from adapters.embedded_db import EmbeddedDatabase, EmbeddedDatabaseError, default_state_dir

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
    parser.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
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
        db, where = _database()
        found = registration.changes(wanted, db)
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
        help="port to listen on (default: the last one used if free, else any free port)",
    )
    parser.set_defaults(handler=_database_command)


def _database_command(args: argparse.Namespace) -> int:
    embedded = EmbeddedDatabase(default_state_dir(), port=args.port)
    try:
        if args.action == "start":
            print(f"TANGO_HOST={embedded.start()}")
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


if __name__ == "__main__":
    sys.exit(main())


# -- demo -----------------------------------------------------------------------------


def _add_demo(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run a narrated beamline session on the embedded defaults",
        description="Start the embedded Tango database (unless TANGO_HOST is set), register "
        "examples/id00.yml, start both servers and drive two datasets through them.",
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from adapters import demo

    return demo.run()
