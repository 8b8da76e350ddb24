"""What both devices share: reading properties, raising readable Tango errors, the clock."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import tango

from icatcore.config import PROPERTY_NAMES
from icatcore.errors import ConfigurationError, InvalidInput
from statecharts.effects import Refused

SOFTWARE = "icat-servers 0.1.0"
MACHINE = socket.getfqdn()
STATE_ENVIRONMENT = "ICAT_SERVERS_STATE"


log = logging.getLogger("icat_servers")
T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC).astimezone()


def new_id() -> str:
    return str(uuid.uuid4())


def epoch() -> float:
    return time.time()


def properties(device: tango.server.Device) -> dict[str, list[str]]:
    """Class properties with the device's own laid over them (SPEC: device overrides class)."""
    database = tango.Util.instance().get_database()
    class_name = device.get_device_class().get_name()
    merged: dict[str, list[str]] = {}
    for found in (
        database.get_class_property(class_name, list(PROPERTY_NAMES)),
        database.get_device_property(device.get_name(), list(PROPERTY_NAMES)),
    ):
        for name, values in found.items():
            if len(values):
                merged[name] = [str(value) for value in values]
    return merged


def database() -> tango.Database | None:
    """The Tango database, or None for a server started with -nodb."""
    try:
        return tango.Util.instance().get_database()
    except tango.DevFailed:
        return None


def state_directory(configured: str, device_name: str) -> Path:
    """Where this device keeps its outbox: property, then environment, then the user's state."""
    if configured:
        root = Path(configured)
    elif os.environ.get(STATE_ENVIRONMENT):
        root = Path(os.environ[STATE_ENVIRONMENT])
    else:
        root = Path.home() / ".local" / "state" / "icat-servers"
    return root / "outbox" / device_name.replace("/", "_")


def fail(reason: str, description: str, origin: str) -> NoReturn:
    tango.Except.throw_exception(reason, description, origin)
    raise AssertionError("unreachable")


@contextmanager
def client_errors(origin: str, refused: str = "API_CommandNotAllowed") -> Iterator[None]:
    """Turn the core's refusals into the Tango errors clients already handle.

    `refused` is the reason a refusal carries: Tango's own for a command or write, or
    API_AttrNotAllowed for a read.
    """
    try:
        yield
    except Refused as refusal:
        fail(refused, str(refusal), origin)
    except InvalidInput as error:
        fail("ICAT_InvalidInput", str(error), origin)
    except ConfigurationError as error:
        fail("ICAT_Configuration", str(error), origin)


def text_argument(value: Any, what: str) -> str:
    """Tango hands strings as str, or bytes when they were not UTF-8: refuse those clearly."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"{what} is not UTF-8 text: send UTF-8") from None
    return str(value)
