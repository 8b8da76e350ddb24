"""Tango properties, parsed once into typed settings: the one reader of configuration.

Input is what the Tango database holds: each property a list of strings, the device's
own properties already laid over the class's. Every error names the property and the fix.

Secrets (`API_KEY`, `queuePasscode`) may also come from a file named by a property
(`API_KEY_FILE`, `queuePasscodeFile`) or from an environment variable of the server
(`ICAT_SERVERS_API_KEY`, `ICAT_SERVERS_QUEUE_PASSCODE`). Reading them is I/O, so the
caller hands in a `SecretSource`; this module stays pure. The settings record where a
secret came from (`api_key_source`), never show its value.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from icat_servers.icatcore import definitions
from icat_servers.icatcore.errors import ConfigurationError
from icat_servers.icatcore.folders import DEFAULT_PATTERN, check_pattern

Properties = Mapping[str, Sequence[str]]

API_KEY_ENVIRONMENT = "ICAT_SERVERS_API_KEY"
PASSCODE_ENVIRONMENT = "ICAT_SERVERS_QUEUE_PASSCODE"

UNUSED = frozenset({"globalHDFfiles", "server", "port", "username"})
"""tango-metadata's properties these servers accept and do not use: `globalHDFfiles`, and
the ICAT reader's `server`, `port`, `username`. A beamline's database keeps working; the
device names them once in Status, `icat-servers register` names them too."""

_BROKER = frozenset(
    {
        "queueURLs",
        "queueName",
        "queueLogin",
        "queuePasscode",
        "queuePasscodeFile",
        "queueCAFile",
        "jolokiaPort",
        "ingesterGraceTime",
    }
)

CLASS_PROPERTIES: Mapping[str, frozenset[str]] = {
    "MetaExperiment": _BROKER | UNUSED,
    "MetadataManager": _BROKER | UNUSED | {"icatplus_server", "API_KEY", "API_KEY_FILE"},
}
"""Properties the devices read as class properties (SPEC "Configuration", icatcore.config).

A name not listed here is refused: the devices would ignore it silently. Add a
property here when this module learns to read it."""

DEVICE_PROPERTIES: Mapping[str, frozenset[str]] = {
    "MetaExperiment": CLASS_PROPERTIES["MetaExperiment"]
    | {"beamlineID", "beamlineId", "outboxDirectory"},
    "MetadataManager": CLASS_PROPERTIES["MetadataManager"]
    | {
        "beamlineID",
        "beamlineId",
        "metaExperimentDevice",
        "dataFolderPattern",
        "parameters",
        "outboxDirectory",
    },
}
"""Device properties; a class property of the same name set on a device overrides it.
`beamlineId` is tango-metadata's spelling, read when `beamlineID` is absent."""

REQUIRED_DEVICE_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    "MetaExperiment": ("beamlineID",),
    "MetadataManager": ("beamlineID", "metaExperimentDevice"),
}
"""What a device cannot work without (`beamlineId` stands for `beamlineID`)."""


@dataclass(frozen=True, slots=True)
class SecretProperty:
    """A secret property and its two safer sources."""

    name: str
    file_property: str
    """Names a file readable by the server's user only, holding the secret."""
    environment: str
    """An environment variable of the server process."""


SECRETS = {
    "API_KEY": SecretProperty("API_KEY", "API_KEY_FILE", API_KEY_ENVIRONMENT),
    "queuePasscode": SecretProperty("queuePasscode", "queuePasscodeFile", PASSCODE_ENVIRONMENT),
}
"""Properties whose values are secrets: never in a log, Status, error or repr."""

PROPERTY_NAMES = tuple(
    sorted(DEVICE_PROPERTIES["MetaExperiment"] | DEVICE_PROPERTIES["MetadataManager"])
)
"""Every property a device reads, as class or device property."""

LIST_PROPERTIES = frozenset({"queueURLs", "parameters", "globalHDFfiles"})
"""Properties that hold a list of values; every other one holds one value."""
SINGLE_VALUED = frozenset(PROPERTY_NAMES) - LIST_PROPERTIES


DEFAULT_STOMP_PORT = 61613
BEAMLINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
DEVICE = re.compile(r"^[A-Za-z0-9_.+\-]+/[A-Za-z0-9_.+\-]+/[A-Za-z0-9_.+\-]+$")
URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
HOST = re.compile(r"^[A-Za-z0-9_.\-:%]+$")
_SCHEMES = ("tcp://", "stomp://")
_TLS_SCHEMES = ("ssl://", "stomp+ssl://")


class SecretSource(Protocol):
    """Where the server reads secrets from; the adapters implement it (files, environment)."""

    def read_file(self, path: str) -> str:
        """The secret in the file, stripped; raises ConfigurationError saying what to fix
        (the path and the problem, never the content)."""
        ...

    def environment(self, name: str) -> str:
        """The server's environment variable, "" when it is not set."""
        ...


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    """`ssl://host:port`: STOMP over TLS, the broker's certificate and host name checked."""

    def __str__(self) -> str:
        return f"ssl://{self.host}:{self.port}" if self.tls else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where messages go. Empty addresses or URL: kept in the outbox, not delivered.

    `api_key_source` and `passcode_source` say where a secret came from ("" for none);
    the values themselves appear in no repr.
    """

    brokers: tuple[BrokerAddress, ...] = ()
    queue: str = "/queue/icatIngest"
    """The STOMP destination, already normalised (`icatIngest` -> `/queue/icatIngest`)."""
    login: str = ""
    passcode: str = field(default="", repr=False)
    passcode_source: str = ""
    icatplus_server: str = ""
    api_key: str = field(default="", repr=False)
    api_key_source: str = ""
    ca_file: str = ""
    """`queueCAFile`: CA certificates (PEM) for `ssl://` brokers; "" = the system's CAs."""
    jolokia_port: int = 0
    ingester_grace_time: float = 120.0
    """`ingesterGraceTime`: seconds a confirmed message may stay in the queue unwarned."""

    def __repr__(self) -> str:
        return (
            f"Delivery(brokers={[str(b) for b in self.brokers]}, queue={self.queue!r}, "
            f"icatplus_server={self.icatplus_server!r}, "
            f"api_key=*** ({self.api_key_source or 'none'}), "
            f"passcode=*** ({self.passcode_source or 'none'}))"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class MetaExperimentConfig:
    beamline: str
    delivery: Delivery
    outbox_directory: str = ""
    """`outboxDirectory`: where the outbox lives; "" for the state directory."""
    unused: tuple[str, ...] = ()
    """Properties present but not used by these servers (UNUSED), for Status, sorted."""


@dataclass(frozen=True, slots=True)
class MetadataManagerConfig:
    beamline: str
    meta_experiment: str
    data_folder_pattern: str
    parameters: tuple[str, ...]
    delivery: Delivery
    outbox_directory: str = ""
    unused: tuple[str, ...] = ()
    """Properties present but not used by these servers (UNUSED), for Status, sorted."""


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


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` most likely misspells, None when none is close."""
    names = list(known)
    lowered = {k.lower(): k for k in names}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return close[0] if close else None


def unused(properties: Properties) -> tuple[str, ...]:
    """The properties present that these servers accept but do not use."""
    return tuple(sorted(name for name in UNUSED if name in properties))


def beamline(properties: Properties) -> str:
    name = "beamlineID" if _values(properties, "beamlineID") else "beamlineId"
    if not _values(properties, name):
        name = "beamlineID"  # the spelling the error should teach
    value = _required(properties, name, "id00")
    if not BEAMLINE.match(value):
        raise ConfigurationError(
            f"property {name} {value!r} is not a beamline name: use letters, digits, - or _"
        )
    return value.lower()


def device_name(text: str, what: str) -> str:
    """A Tango device name `domain/family/member`, lower-cased as Tango compares them."""
    if not DEVICE.match(text):
        raise ConfigurationError(
            f"{what} {text!r} is not a Tango device name of the form domain/family/member: "
            "write e.g. id00/metaexp/test"
        )
    return text.lower()


def broker_address(text: str) -> BrokerAddress:
    """One `queueURLs` entry: `host:port` or `host` (port 61613); `tcp://` is tolerated;
    `ssl://host:port` (or `stomp+ssl://`) means TLS with certificate verification."""
    bare = text
    tls = False
    for scheme in _SCHEMES + _TLS_SCHEMES:
        if bare.lower().startswith(scheme):
            bare = bare[len(scheme) :]
            tls = scheme in _TLS_SCHEMES
            break
    if bare.startswith("["):  # [v6::address]:port
        host, _, rest = bare[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else "bad")
    elif bare.count(":") == 1:
        host, _, port = bare.partition(":")
    else:
        host, port = bare, ""
    if (
        not host
        or not HOST.match(host)
        or (port and not port.isdigit())
        or (port and not 0 < int(port) < 65536)
    ):
        raise ConfigurationError(
            f"property queueURLs entry {text!r} is not host:port: write e.g. localhost:61613 "
            "(or ssl://broker.example.org:61614 for TLS)"
        )
    return BrokerAddress(host, int(port) if port else DEFAULT_STOMP_PORT, tls)


def queue_name(text: str) -> str:
    """`icatIngest` means `/queue/icatIngest`; a full destination is kept."""
    return text if text.startswith("/") else f"/queue/{text}"


def _secret(
    properties: Properties, secret: SecretProperty, secrets: SecretSource | None
) -> tuple[str, str]:
    """The secret and where it came from: the file property, the environment, the property.

    In that order; a source that is also set but not used is named in the source text,
    so Status tells the operator to remove it.
    """
    name, file_property, environment = secret.name, secret.file_property, secret.environment
    path = _single(properties, file_property)
    in_environment = secrets.environment(environment) if secrets is not None else ""
    in_database = _single(properties, name)
    if path:
        if not path.startswith("/"):
            raise ConfigurationError(
                f"property {file_property} {path!r} is not an absolute path: write e.g. "
                f"/etc/icat-servers/{name.lower()}, a file readable by the server's user only"
            )
        if secrets is None:
            raise ConfigurationError(
                f"property {file_property} is set, but this reader was given no way to read "
                "files: pass the server's SecretSource"
            )
        value = secrets.read_file(path)
        if not value:
            raise ConfigurationError(
                f"property {file_property}: the file {path} is empty: write the secret in it"
            )
        source = f"file {path}"
        ignored = [f"environment variable {environment}"] if in_environment else []
    elif in_environment:
        value, source, ignored = in_environment, f"environment variable {environment}", []
    elif in_database:
        return in_database, f"property {name} in the Tango database ({file_property} is safer)"
    else:
        return "", ""
    if in_database:
        ignored.append(f"property {name}")
    if ignored:
        source += f" ({' and '.join(ignored)} not used: remove it)"
    return value, source


def delivery(
    properties: Properties, *, icatplus: bool, secrets: SecretSource | None = None
) -> Delivery:
    brokers = tuple(
        broker_address(item)
        for value in _values(properties, "queueURLs")
        for item in value.replace(",", " ").split()
    )
    jolokia = _single(properties, "jolokiaPort", "0")
    if not jolokia.isdigit() or int(jolokia) > 65535:
        raise ConfigurationError(
            f"property jolokiaPort {jolokia!r} is not a port: give 1..65535, or 0 for off"
        )
    grace = _single(properties, "ingesterGraceTime", "120")
    try:
        grace_time = float(grace)
    except ValueError:
        grace_time = -1.0
    if not 0 < grace_time < float("inf"):
        raise ConfigurationError(
            f"property ingesterGraceTime {grace!r} is not a number of seconds: write e.g. 120"
        )
    ca_file = _single(properties, "queueCAFile")
    if ca_file and not ca_file.startswith("/"):
        raise ConfigurationError(
            f"property queueCAFile {ca_file!r} is not an absolute path: write e.g. "
            "/etc/icat-servers/broker-ca.pem"
        )
    server = _single(properties, "icatplus_server") if icatplus else ""
    if server and not URL.match(server):
        raise ConfigurationError(
            f"property icatplus_server {server!r} is not an http(s) URL: "
            "write e.g. https://icatplus.esrf.fr"
        )
    passcode, passcode_source = _secret(properties, SECRETS["queuePasscode"], secrets)
    api_key, api_key_source = (
        _secret(properties, SECRETS["API_KEY"], secrets) if icatplus else ("", "")
    )
    return Delivery(
        brokers=brokers,
        queue=queue_name(_single(properties, "queueName", "/queue/icatIngest")),
        login=_single(properties, "queueLogin"),
        passcode=passcode,
        passcode_source=passcode_source,
        icatplus_server=server.rstrip("/"),
        api_key=api_key,
        api_key_source=api_key_source,
        ca_file=ca_file,
        jolokia_port=int(jolokia),
        ingester_grace_time=grace_time,
    )


def parameters(properties: Properties) -> tuple[str, ...]:
    """`parameters`: ICAT parameter names, each once, in the order given."""
    names = tuple(
        item
        for value in _values(properties, "parameters")
        for item in value.replace(",", " ").split()
    )
    unknown = definitions.unknown_parameters(names)
    if unknown:
        known = definitions.parameter_names()
        described = []
        for name in unknown:
            guess = nearest(name, known)
            described.append(f"{name!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
        raise ConfigurationError(
            f"property parameters names unknown ICAT parameter(s) {', '.join(described)}: "
            "use names from icat-esrf-definitions"
        )
    return tuple(dict.fromkeys(names))


def meta_experiment(
    properties: Properties, *, secrets: SecretSource | None = None
) -> MetaExperimentConfig:
    return MetaExperimentConfig(
        beamline(properties),
        delivery(properties, icatplus=False, secrets=secrets),
        _single(properties, "outboxDirectory"),
        unused(properties),
    )


def metadata_manager(
    properties: Properties, *, secrets: SecretSource | None = None
) -> MetadataManagerConfig:
    meta = device_name(
        _required(properties, "metaExperimentDevice", "id00/metaexp/test"),
        "property metaExperimentDevice",
    )
    names = parameters(properties)  # before the beamline: a Status names this problem first
    return MetadataManagerConfig(
        beamline=beamline(properties),
        meta_experiment=meta,
        data_folder_pattern=check_pattern(
            _single(properties, "dataFolderPattern", DEFAULT_PATTERN)
        ),
        parameters=names,
        delivery=delivery(properties, icatplus=True, secrets=secrets),
        outbox_directory=_single(properties, "outboxDirectory"),
        unused=unused(properties),
    )


def unused_line(settings: MetaExperimentConfig | MetadataManagerConfig) -> str:
    """The Status line naming the properties set but not used (shown once, at start);
    "" when there are none."""
    if not settings.unused:
        return ""
    names = ", ".join(settings.unused)
    return (
        f"{'property' if len(settings.unused) == 1 else 'properties'} {names} "
        "set but not used by these servers (tango-metadata's; they may be removed)"
    )


def secret_lines(settings: Delivery) -> tuple[str, ...]:
    """Status lines saying where each secret in use came from; never a value."""
    return tuple(
        f"{what} from {source}"
        for what, source in (
            ("broker passcode", settings.passcode_source),
            ("e-logbook API key", settings.api_key_source),
        )
        if source
    )


READERS = {"MetaExperiment": meta_experiment, "MetadataManager": metadata_manager}
"""Each device class's reader, by class name."""


def class_delivery(
    device_class: str, properties: Properties, *, secrets: SecretSource | None = None
) -> Delivery:
    """Check a class's own properties as its devices will read them (class entries of
    a registration file): the delivery part, which is all a class property sets."""
    return delivery(properties, icatplus=device_class == "MetadataManager", secrets=secrets)
