"""What both devices share: their properties and log, readable Tango errors, the clock."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import tango

from icat_servers.adapters.secrets import SERVER_SECRETS
from icat_servers.adapters.tango import logs
from icat_servers.adapters.tango import properties as tango_properties
from icat_servers.icatcore import config, facility
from icat_servers.icatcore.errors import ConfigurationError, InvalidInput
from icat_servers.statecharts.effects import Refused

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
    """The device's properties, raw for icatcore.config: the device's laid over the class's.

    Logs them (secrets named, never shown) and masks the secrets in every later line.
    Raises ConfigurationError when none is set (see adapters.tango.properties.gather).
    """
    found = tango_properties.gather(device)
    logs.hide(tango_properties.secrets(found))
    log.info(
        "configuration read: %s", tango_properties.shown(found), extra={"device": device.get_name()}
    )
    return found


Configuration = TypeVar("Configuration", config.MetaExperimentConfig, config.MetadataManagerConfig)


def read_configuration(
    device: tango.server.Device, reader: Callable[..., Configuration]
) -> tuple[Configuration | None, str, tuple[str, ...]]:
    """The device's properties through its reader in icatcore.config: the settings, or
    None and the problem in words; and the Status lines on the configuration (properties
    set but not used, where each secret comes from). Secrets are masked in later logs."""
    try:
        settings = reader(properties(device), secrets=SERVER_SECRETS)
    except ConfigurationError as error:
        return None, str(error), ()
    delivery: config.Delivery = settings.delivery
    logs.hide((delivery.api_key, delivery.passcode))
    lines = (config.unused_line(settings), *config.secret_lines(delivery))
    notes = tuple(line for line in lines if line)
    if facility.problem():
        return None, facility.problem(), notes
    return settings, "", notes


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


class Citizen:
    """Mixin of both devices: their `log`, routed to their Tango logger (adapters.tango.logs).

    Logs what an operator follows: state changes, and each new FAULT Status, which says
    what is wrong and the fix.
    """

    log: logs.DeviceLog
    logged_state: tango.DevState | None = None
    logged_fault = ""

    def init_device(self) -> None:
        super().init_device()  # type: ignore[misc]
        self.log = logs.attach(self)

    def delete_device(self) -> None:
        """No line reaches a deleted device's logger (Init attaches the device again)."""
        logs.detach(self)
        super().delete_device()  # type: ignore[misc]

    def set_state(self, state: tango.DevState) -> None:
        if state != self.logged_state:
            if self.logged_state is not None:
                self.log.info("state %s -> %s", self.logged_state, state)
            self.logged_state = state
        super().set_state(state)  # type: ignore[misc]

    def set_status(self, status: str) -> None:
        if self.logged_state == tango.DevState.FAULT:
            if status != self.logged_fault:
                self.log.error("%s", status)
                self.logged_fault = status
        else:
            self.logged_fault = ""
        super().set_status(status)  # type: ignore[misc]

    def note_stored(self, what: str, message_id: str) -> None:
        """A message is durably in the outbox: say so, and name it when it is confirmed."""
        logs.label(message_id, what)
        self.log.info("%s stored in the outbox as message %s", what, message_id)
