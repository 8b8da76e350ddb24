"""The devices' Tango properties: declared for Jive's wizard, gathered raw for icatcore.config.

Which properties exist is icatcore.config's business (CLASS_PROPERTIES, DEVICE_PROPERTIES):
the declarations are built from its tables, so a property it learns to read is declared
too. This module only adds what a person needs in Jive: a one-line description and the
default. Values are not parsed here: `gather` hands icatcore.config the raw strings as the
database holds them, the device's own laid over the class's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import tango
from tango.server import class_property, device_property

from icat_servers.icatcore import config
from icat_servers.icatcore.errors import ConfigurationError
from icat_servers.icatcore.folders import DEFAULT_PATTERN


@dataclass(frozen=True, slots=True)
class Described:
    description: str
    default: str | None = ""
    """What icatcore.config uses when the property is absent; None for a required one."""


DESCRIPTIONS: Mapping[str, Described] = {
    "queueURLs": Described(
        "ActiveMQ brokers as host:port (port 61613 by default), ssl://host:port for TLS; "
        "several mean failover; empty keeps messages in the outbox"
    ),
    "queueCAFile": Described(
        "CA certificates (PEM, absolute path) for ssl:// brokers; empty: the system's CAs"
    ),
    "queueName": Described(
        "STOMP destination of the ICAT ingester; a bare name means /queue/NAME",
        "/queue/icatIngest",
    ),
    "queueLogin": Described("broker login, when the broker asks for one"),
    "queuePasscode": Described("broker passcode; a secret, never shown"),
    "jolokiaPort": Described(
        "ActiveMQ Jolokia port for the consumer-count health check; 0 = off", "0"
    ),
    "icatplus_server": Described(
        "ICAT+ base URL for the e-logbook, e.g. https://icatplus.esrf.fr; "
        "empty keeps logbook messages in the outbox"
    ),
    "API_KEY": Described("ICAT+ e-logbook token; a secret, never shown"),
    "beamlineID": Described("required: the beamline, e.g. id00", None),
    "metaExperimentDevice": Described(
        "required: the MetaExperiment this device follows, e.g. id00/metaexp/test", None
    ),
    "dataFolderPattern": Described(
        "the dataset folder; may use {dataRoot}, {proposal}, {beamlineID}, {sampleName}, "
        "{datasetName}",
        DEFAULT_PATTERN,
    ),
    "parameters": Described(
        "ICAT parameter names this technique records; each becomes a read-write attribute"
    ),
    "outboxDirectory": Described(
        "where the outbox lives; empty: $ICAT_SERVERS_STATE/outbox/<device>"
    ),
}
"""One line per property for Jive's wizard; a name icatcore.config adds without a line here
gets `generic(name)`."""

SECRET_WORDS = ("passcode", "password", "api_key", "apikey", "secret", "token")


def generic(name: str) -> Described:
    return Described(f"{name}: see the README's table of properties")


def described(name: str) -> Described:
    return DESCRIPTIONS.get(name) or generic(name)


def is_secret(name: str) -> bool:
    """A property whose value must never be shown; a property naming a file is not one."""
    lower = name.lower()
    return any(word in lower for word in SECRET_WORDS) and not lower.endswith("file")


def multi_valued(name: str) -> bool:
    return name not in config.SINGLE_VALUED


def declaration(name: str, kind: type[Any]) -> Any:
    """A class_property or device_property: a string, or a list of strings for lists."""
    about = described(name)
    if multi_valued(name):
        default: object = [about.default] if about.default else []
        return kind(dtype=(str,), doc=about.description, default_value=default)
    return kind(dtype=str, doc=about.description, default_value=about.default or "")


def distinct(names: Iterable[str]) -> list[str]:
    """Tango's property names ignore case: `beamlineId` (tango-metadata's spelling) is
    `beamlineID` to Jive's wizard, which refuses to list a name twice."""
    seen: set[str] = set()
    kept = []
    for name in sorted(names):
        if name.lower() not in seen:
            seen.add(name.lower())
            kept.append(name)
    return kept


def declared(class_name: str) -> type:
    """A base class holding the declarations of one device class, for pytango to list.

    Class properties as `class_property`, the device-only ones as `device_property`; a
    device property of a class property's name still overrides it (`gather`).
    """
    class_names = config.CLASS_PROPERTIES[class_name]
    members: dict[str, Any] = {
        name: declaration(name, class_property) for name in distinct(class_names)
    }
    members.update(
        {
            name: declaration(name, device_property)
            for name in distinct(config.DEVICE_PROPERTIES[class_name] - class_names)
        }
    )
    members["__doc__"] = f"The Tango properties {class_name} reads (icatcore.config)."
    return type(f"{class_name}Properties", (), members)


def database() -> tango.Database | None:
    """The server's database: the Tango database, the file of `-file=`, or None (`-nodb`)."""
    try:
        return tango.Util.instance().get_database()
    except tango.DevFailed:
        return None


def gather(device: tango.server.Device) -> dict[str, list[str]]:
    """Class properties with the device's own laid over them (SPEC: device overrides class).

    Raw, as lists of strings, for icatcore.config to parse. Raises ConfigurationError
    when nothing at all is set (`-nodb`, or a device registered without properties),
    naming every required property, since icatcore.config would name only the first.
    """
    class_name = device.get_device_class().get_name()
    found = database()
    merged: dict[str, list[str]] = {}
    if found is not None:
        for values_by_name in (
            found.get_class_property(class_name, list(config.PROPERTY_NAMES)),
            found.get_device_property(device.get_name(), list(config.PROPERTY_NAMES)),
        ):
            for name, values in values_by_name.items():
                if len(values):
                    merged[name] = [str(value) for value in values]
    if not any(value.strip() for values in merged.values() for value in values):
        required = config.REQUIRED_DEVICE_PROPERTIES.get(class_name, ())
        where = (
            "this server runs without a Tango database (-nodb): give it a file database "
            "with -file=FILE, or register it in the Tango database"
            if found is None
            else f"set them in the Tango database for {device.get_name()}"
        )
        raise ConfigurationError(
            f"no properties are set; missing required {_names(required)}: {where}"
        )
    return merged


def shown(properties: Mapping[str, list[str]]) -> str:
    """The configuration as read, for the log: every value but the secrets'."""
    parts = []
    for name in sorted(properties):
        if is_secret(name):
            parts.append(f"{name}=(set, not shown)")
        else:
            values = properties[name]
            parts.append(f"{name}={values[0]!r}" if len(values) == 1 else f"{name}={values!r}")
    return ", ".join(parts) if parts else "(none)"


def secrets(properties: Mapping[str, list[str]]) -> list[str]:
    """The secret values read, so that the log can mask them wherever they appear."""
    return [
        value.strip()
        for name, values in properties.items()
        if is_secret(name)
        for value in values
        if value.strip()
    ]


def _names(names: tuple[str, ...]) -> str:
    if len(names) <= 1:
        return f"property {''.join(names)}"
    return f"properties {', '.join(names[:-1])} and {names[-1]}"
