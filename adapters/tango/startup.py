"""How a server process starts: its --help, and which Tango database it uses.

With TANGO_HOST set (in the environment or a tangorc file) a server uses that
database, as every Tango server does. With none, it uses the embedded database
of $ICAT_SERVERS_STATE when one runs (and says so in its log), else it exits
with one line saying how to get one, instead of Tango's bare
"TANGO_HOST env. variable not set".
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ABOUT = {
    "MetaExperiment": "holds the proposal (the ICAT investigation), the sample and the data "
    "root of a beamline session, memorized, and tells every MetadataManager that follows it "
    "each change before the write returns; a new proposal is announced to ICAT.",
    "MetadataManager": "holds the dataset being measured (name, parameters, files), follows "
    "its MetaExperiment, registers each dataset with ICAT (XML over STOMP to ActiveMQ) and "
    "forwards e-logbook messages to ICAT+, through a durable outbox.",
}

HELP_FLAGS = ("-h", "-?", "--help")
NO_DATABASE_FLAGS = ("-nodb", "--nodb", "-file", "--file")


def readme() -> str:
    """Where the README is: the checkout's, else the project's name to look it up by."""
    here = Path(__file__).resolve().parents[2] / "README.md"
    if here.is_file():
        return str(here)
    return "README.md of the icat-servers project (its source repository)"


def about(class_name: str) -> str:
    """The lines --help adds before Tango's own options."""
    from icat_servers.adapters.embedded_db import default_state_dir
    from icat_servers.icatcore.config import (
        CLASS_PROPERTIES,
        DEVICE_PROPERTIES,
        REQUIRED_DEVICE_PROPERTIES,
    )

    required = REQUIRED_DEVICE_PROPERTIES[class_name]
    class_properties = sorted(CLASS_PROPERTIES[class_name])
    device_only = sorted(DEVICE_PROPERTIES[class_name] - CLASS_PROPERTIES[class_name])
    lines = [
        f"{class_name} INSTANCE: the {class_name} Tango device server of icat-servers; it "
        + ABOUT[class_name],
        f"  class properties (a device property of the same name overrides them): "
        f"{', '.join(class_properties)}",
        f"  device properties: {', '.join(device_only)} (required: {', '.join(required)})",
        "  Tango database: TANGO_HOST; when it is not set, the embedded database of "
        f"ICAT_SERVERS_STATE (now {default_state_dir()}) if one runs: start it with "
        "'icat-servers up' (database, registration, both servers) or "
        "'icat-servers database start'.",
        "  Outboxes: $ICAT_SERVERS_STATE/outbox/<device> unless outboxDirectory is set.",
        f"  Documentation: {readme()}",
    ]
    wrapped = (
        textwrap.fill(
            line, 88, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
        )
        for line in lines
    )
    return "\n".join(wrapped) + "\n"


def tango_host_configured() -> bool:
    """TANGO_HOST in the environment or in a tangorc file, as Tango itself looks it up."""
    if os.environ.get("TANGO_HOST", "").strip():
        return True
    import tango

    try:
        return bool(tango.ApiUtil.get_env_var("TANGO_HOST"))
    except Exception:  # pytango raises its own error types when nothing is found
        return False


def choose_database(class_name: str, argv: Sequence[str]) -> str | None:
    """None when the server can start; else the one line that says why it cannot.

    Sets TANGO_HOST to the embedded database when that is the one to use.
    """
    if any(arg.split("=", 1)[0] in NO_DATABASE_FLAGS for arg in argv):
        return None
    if tango_host_configured():
        return None
    from icat_servers.adapters.embedded_db import EmbeddedDatabase, default_state_dir

    state = default_state_dir()
    running = EmbeddedDatabase(state).status()
    if running is None:
        return (
            f"{class_name}: TANGO_HOST is not set and no embedded Tango database runs in "
            f"{state}: run 'icat-servers up' (database, registration and both servers) or "
            "'icat-servers database start' (then 'icat-servers register FILE'), or export "
            "TANGO_HOST=host:port of your Tango database"
        )
    os.environ["TANGO_HOST"] = running.tango_host
    print(
        f"{class_name}: TANGO_HOST is not set: using the embedded Tango database of {state}, "
        f"TANGO_HOST={running.tango_host}",
        file=sys.stderr,
        flush=True,
    )
    return None


def serve(run: Callable[..., Any], classes: Sequence[Any], argv: Sequence[str]) -> int:
    """Run the device server of `classes` (named after the first) with `run`
    (`tango.server.run`) and Tango's command line `argv` (without the program name)."""
    class_name: str = classes[0].__name__
    if any(arg in HELP_FLAGS for arg in argv):
        print(about(class_name), flush=True)
    else:
        refused = choose_database(class_name, argv)
        if refused is not None:
            print(refused, file=sys.stderr)
            return 1
    run(tuple(classes), args=[class_name, *argv])
    return 0
