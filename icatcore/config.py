"""Tango properties, parsed once into typed settings: the one reader of configuration.

Input is what the Tango database holds: each property a list of strings, the device's
own properties already laid over the class's. Every error names the property and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from icatcore import definitions
from icatcore.errors import ConfigurationError
from icatcore.folders import DEFAULT_PATTERN, check_pattern

Properties = Mapping[str, Sequence[str]]

_BROKER = frozenset(
    {"queueURLs", "queueName", "queueLogin", "queuePasscode", "jolokiaPort", "ingesterGraceTime"}
)

CLASS_PROPERTIES: Mapping[str, frozenset[str]] = {
    "MetaExperiment": _BROKER,
    "MetadataManager": _BROKER | {"icatplus_server", "API_KEY"},
}
"""Properties the devices read as class properties (SPEC "Configuration", icatcore.config).

A name not listed here is refused: the devices would ignore it silently. Add a
property here when this module learns to read it."""

DEVICE_PROPERTIES: Mapping[str, frozenset[str]] = {
    "MetaExperiment": CLASS_PROPERTIES["MetaExperiment"] | {"beamlineID", "outboxDirectory"},
    "MetadataManager": CLASS_PROPERTIES["MetadataManager"]
    | {"beamlineID", "metaExperimentDevice", "dataFolderPattern", "parameters", "outboxDirectory"},
}
"""Device properties; a class property of the same name set on a device overrides it."""

REQUIRED_DEVICE_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    "MetaExperiment": ("beamlineID",),
    "MetadataManager": ("beamlineID", "metaExperimentDevice"),
}

SINGLE_VALUED = frozenset(
    {
        "queueName",
        "queueLogin",
        "queuePasscode",
        "icatplus_server",
        "API_KEY",
        "jolokiaPort",
        "ingesterGraceTime",
        "beamlineID",
        "metaExperimentDevice",
        "dataFolderPattern",
    }
)

PROPERTY_NAMES = tuple(
    sorted(DEVICE_PROPERTIES["MetaExperiment"] | DEVICE_PROPERTIES["MetadataManager"])
)
"""Every property a device reads, as class or device property."""


DEFAULT_STOMP_PORT = 61613
BEAMLINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
DEVICE = re.compile(r"^[^/\s]+/[^/\s]+/[^/\s]+$")
URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where messages go. Empty addresses or URL: kept in the outbox, not delivered."""

    brokers: tuple[BrokerAddress, ...] = ()
    queue: str = "/queue/icatIngest"
    login: str = ""
    passcode: str = ""
    icatplus_server: str = ""
    api_key: str = ""
    jolokia_port: int = 0
    ingester_grace_time: float = 120.0
    """`ingesterGraceTime`: seconds a confirmed message may stay in the queue unwarned."""

    def __repr__(self) -> str:
        return (
            f"Delivery(brokers={[str(b) for b in self.brokers]}, queue={self.queue!r}, "
            f"icatplus_server={self.icatplus_server!r}, api_key=***, passcode=***)"
        )


@dataclass(frozen=True, slots=True)
class MetaExperimentConfig:
    beamline: str
    delivery: Delivery
    outbox_directory: str = ""
    """`outboxDirectory`: where the outbox lives; "" for the state directory."""


@dataclass(frozen=True, slots=True)
class MetadataManagerConfig:
    beamline: str
    meta_experiment: str
    data_folder_pattern: str
    parameters: tuple[str, ...]
    delivery: Delivery
    outbox_directory: str = ""


def _values(properties: Properties, name: str) -> list[str]:
    return [value.strip() for value in properties.get(name, ()) if value.strip()]


def _single(properties: Properties, name: str, default: str = "") -> str:
    values = _values(properties, name)
    if len(values) > 1:
        raise ConfigurationError(f"property {name} has {len(values)} values: give exactly one")
    return values[0] if values else default


def _required(properties: Properties, name: str, example: str) -> str:
    value = _single(properties, name)
    if not value:
        raise ConfigurationError(
            f"property {name} is missing: set it in the Tango database, e.g. {name}: {example}"
        )
    return value


def beamline(properties: Properties) -> str:
    value = _required(properties, "beamlineID", "id00")
    if not BEAMLINE.match(value):
        raise ConfigurationError(
            f"property beamlineID {value!r} is not a beamline name: use letters, digits, - or _"
        )
    return value.lower()


def broker_address(text: str) -> BrokerAddress:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    host = host.strip("[]")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise ConfigurationError(
            f"property queueURLs entry {text!r} is not host:port: write e.g. localhost:61613"
        )
    return BrokerAddress(host, int(port) if port else DEFAULT_STOMP_PORT)


def queue_name(text: str) -> str:
    return text if text.startswith("/") else f"/queue/{text}"


def delivery(properties: Properties, *, icatplus: bool) -> Delivery:
    brokers = tuple(
        broker_address(item)
        for value in _values(properties, "queueURLs")
        for item in value.replace(",", " ").split()
    )
    jolokia = _single(properties, "jolokiaPort", "0")
    if not jolokia.isdigit():
        raise ConfigurationError(f"property jolokiaPort {jolokia!r} is not a port: use 0 for off")
    grace = _single(properties, "ingesterGraceTime", "120")
    try:
        grace_time = float(grace)
    except ValueError:
        grace_time = -1.0
    if not 0 < grace_time < float("inf"):
        raise ConfigurationError(
            f"property ingesterGraceTime {grace!r} is not a number of seconds: write e.g. 120"
        )
    server = _single(properties, "icatplus_server") if icatplus else ""
    if server and not URL.match(server):
        raise ConfigurationError(
            f"property icatplus_server {server!r} is not an http(s) URL: "
            "write e.g. https://icatplus.esrf.fr"
        )
    return Delivery(
        brokers=brokers,
        queue=queue_name(_single(properties, "queueName", "/queue/icatIngest")),
        login=_single(properties, "queueLogin"),
        passcode=_single(properties, "queuePasscode"),
        icatplus_server=server.rstrip("/"),
        api_key=_single(properties, "API_KEY") if icatplus else "",
        jolokia_port=int(jolokia),
        ingester_grace_time=grace_time,
    )


def meta_experiment(properties: Properties) -> MetaExperimentConfig:
    return MetaExperimentConfig(
        beamline(properties),
        delivery(properties, icatplus=False),
        _single(properties, "outboxDirectory"),
    )


def metadata_manager(properties: Properties) -> MetadataManagerConfig:
    meta = _required(properties, "metaExperimentDevice", "id00/metaexp/test")
    if not DEVICE.match(meta):
        raise ConfigurationError(
            f"property metaExperimentDevice {meta!r} is not a device name: "
            "write domain/family/member"
        )
    names = tuple(
        item
        for value in _values(properties, "parameters")
        for item in value.replace(",", " ").split()
    )
    unknown = definitions.unknown_parameters(names)
    if unknown:
        raise ConfigurationError(
            f"property parameters names unknown ICAT parameter(s) {', '.join(unknown)}: "
            "use names from icat-esrf-definitions"
        )
    return MetadataManagerConfig(
        beamline=beamline(properties),
        meta_experiment=meta.lower(),
        data_folder_pattern=check_pattern(
            _single(properties, "dataFolderPattern", DEFAULT_PATTERN)
        ),
        parameters=tuple(dict.fromkeys(names)),
        delivery=delivery(properties, icatplus=True),
        outbox_directory=_single(properties, "outboxDirectory"),
    )
