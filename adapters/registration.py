"""Register the ICAT servers in a Tango database from the beamline's YAML files.

Beamline staff describe the servers in the shape of the installation page:
entries with `class` + `properties` hold class properties; entries with
`server`, `personal_name` and a `device` list hold devices. Everything is
validated before the database is touched, because a half-registered beamline
(a device without its queue, a typo in a property name the device silently
ignores) is a dataset that never reaches ICAT. The changes are then computed
against what the database holds, so a second run writes nothing.

`plan` is pure (no Tango); `changes` reads the database; `apply` writes.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from icatcore.config import (
    CLASS_PROPERTIES,
    DEVICE_PROPERTIES,
    REQUIRED_DEVICE_PROPERTIES,
    SINGLE_VALUED,
)

CLASSES = ("MetaExperiment", "MetadataManager")
"""The two device classes, each run by the console script of the same name."""

CLASS_ENTRY_KEYS = frozenset({"class", "properties"})
SERVER_ENTRY_KEYS = frozenset({"server", "personal_name", "device"})
DEVICE_KEYS = frozenset({"tango_name", "class", "properties"})

_DEVICE_NAME = re.compile(r"^[A-Za-z0-9_.+\-]+/[A-Za-z0-9_.+\-]+/[A-Za-z0-9_.+\-]+$")

PropertyValue = tuple[str, ...]
"""Tango properties are lists of strings."""


def is_secret(name: str) -> bool:
    """Property values that must never be printed, logged or put in an error."""
    lowered = name.lower()
    return lowered == "api_key" or "passcode" in lowered or "password" in lowered


def show_value(name: str, value: PropertyValue | None) -> str:
    """A property value as a change listing shows it, secrets masked."""
    if value is None:
        return "(absent)"
    if is_secret(name):
        return "***"
    return json.dumps(list(value))


# -- the plan -------------------------------------------------------------------------


class Properties(dict[str, PropertyValue]):
    """Property name -> values, whose repr masks secrets (reprs end up in tracebacks)."""

    def __repr__(self) -> str:
        shown = (f"{k!r}: {'***' if is_secret(k) else repr(v)}" for k, v in self.items())
        return "{" + ", ".join(shown) + "}"


@dataclass(frozen=True)
class DevicePlan:
    """One device as the YAML describes it."""

    name: str
    device_class: str
    server: str  # "MetadataManager/icatservers"
    properties: Mapping[str, PropertyValue]
    file: Path
    where: str  # "entry 3 (server ...), line 20, device 1 (...), line 23"

    @property
    def origin(self) -> str:
        return f"{self.file} {self.where}"


@dataclass(frozen=True)
class Registration:
    """What the YAML files ask the Tango database to hold, validated."""

    files: tuple[Path, ...]
    class_properties: Mapping[str, Mapping[str, PropertyValue]]
    devices: tuple[DevicePlan, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one file, located for the person who must fix it."""

    file: Path
    where: str  # "entry 3 (server MetadataManager/icatservers), line 12" or ""
    message: str

    def __str__(self) -> str:
        located = f"{self.file}: {self.where}" if self.where else str(self.file)
        return f"{located}: {self.message}"


class RegistrationError(ValueError):
    """The YAML files are not a valid registration; nothing was written."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in the registration files; "
            f"nothing was written. Fix {'them' if count != 1 else 'it'} and run again:\n{lines}"
        )


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: construction reports it
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is written twice (first on line {first})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _load(path: Path) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree (for line numbers)."""
    text = path.read_text(encoding="utf-8")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


def _line(node: yaml.Node | None) -> str:
    return f"line {node.start_mark.line + 1}" if node is not None else ""


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    return None


def _item(node: yaml.Node | None, index: int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index]  # type: ignore[no-any-return]
    return None


def _entry_label(entry: Any) -> str:
    if isinstance(entry, Mapping):
        if "server" in entry:
            return f"server {entry.get('server')}/{entry.get('personal_name', '?')}"
        if "class" in entry:
            return f"class {entry.get('class')}"
    return "unnamed"


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        close = [lowered[name.lower()]]
    return f" Did you mean {close[0]!r}?" if close else ""


def icat_parameter_names() -> frozenset[str]:
    """The ICAT parameter names the devices accept (icat-esrf-definitions)."""
    from icatcore import definitions  # late: loading the definitions takes about a second

    return definitions.parameter_names()


class _FileChecker:
    """Collects every problem of one file instead of stopping at the first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(self.path, where, message))

    def unknown_keys(
        self, where: str, what: str, mapping: Mapping[Any, Any], allowed: frozenset[str]
    ) -> None:
        for key in mapping:
            if key not in allowed:
                self.problem(
                    where,
                    f"unknown key {key!r} in {what}; allowed: {', '.join(sorted(allowed))}."
                    + _suggest(str(key), allowed),
                )

    def text(self, where: str, what: str, value: Any, *, allow_int: bool = False) -> str | None:
        if isinstance(value, str) and value.strip():
            return value.strip()
        if allow_int and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is None or value == "":
            self.problem(where, f"{what} is missing or empty: write it as text.")
        else:
            self.problem(where, f"{what} must be text, not {type(value).__name__}: quote it.")
        return None

    def device_class(self, where: str, value: Any) -> str | None:
        name = self.text(where, "class", value)
        if name is not None and name not in CLASSES:
            self.problem(
                where,
                f"class {name!r} is not an ICAT server class: use one of "
                f"{', '.join(CLASSES)}." + _suggest(name, CLASSES),
            )
            return None
        return name

    def properties(self, where: str, raw: Any, allowed: frozenset[str], owner: str) -> Properties:
        result = Properties()
        if raw is None:
            return result
        if not isinstance(raw, Mapping):
            self.problem(
                where, f"properties must be a mapping of name: value, not {type(raw).__name__}."
            )
            return result
        lowered: dict[str, str] = {}
        for name, value in raw.items():
            if not isinstance(name, str) or not name:
                self.problem(where, f"property name {name!r} must be text.")
                continue
            if name not in allowed:
                self.problem(
                    where,
                    f"property {name!r} is not read by {owner}; known: "
                    f"{', '.join(sorted(allowed))}." + _suggest(name, allowed),
                )
                continue
            if name.lower() in lowered:  # Tango property names ignore case
                self.problem(
                    where,
                    f"property {name!r} is also written as {lowered[name.lower()]!r}: keep one.",
                )
                continue
            lowered[name.lower()] = name
            converted = self.value(where, name, value)
            if converted is not None and self.value_is_valid(where, name, converted):
                result[name] = converted
        return result

    def value(self, where: str, name: str, value: Any) -> PropertyValue | None:
        items = value if isinstance(value, list) else [value]
        out: list[str] = []
        for item in items:
            if isinstance(item, bool):
                out.append("true" if item else "false")
            elif isinstance(item, str | int | float):
                out.append(str(item))
            elif isinstance(item, dt.date):
                out.append(item.isoformat())
            elif item is None:
                self.problem(
                    where, f"property {name!r} has no value: give one, or [] to leave it empty."
                )
                return None
            elif isinstance(item, Mapping) and not is_secret(name) and len(item) == 1:
                ((key, inner),) = item.items()
                hint = f' If you meant the text "{{{key}}}", quote it.' if inner is None else ""
                self.problem(
                    where, f"property {name!r} is a mapping, not text or a list of text.{hint}"
                )
                return None
            else:
                kind = type(item).__name__
                self.problem(
                    where,
                    f"property {name!r} must be text or a list of text, "
                    f"not {'a list of ' if item is not value else ''}{kind}.",
                )
                return None
        return tuple(out)

    def value_is_valid(self, where: str, name: str, value: PropertyValue) -> bool:
        """Checks the devices would otherwise only report at run time, as FAULT."""
        before = len(self.problems)
        if name in SINGLE_VALUED and len(value) > 1:
            self.problem(where, f"property {name!r} takes one value, not a list of {len(value)}.")
        elif (
            name == "jolokiaPort"
            and value
            and not (value[0].isdigit() and 0 <= int(value[0]) <= 65535)
        ):
            self.problem(
                where, f"jolokiaPort must be a port number 0..65535 (0 = off), not {value[0]!r}."
            )
        elif name == "metaExperimentDevice" and value and not _DEVICE_NAME.match(value[0]):
            self.problem(
                where,
                f"metaExperimentDevice {value[0]!r} is not a Tango device "
                "name of the form domain/family/member.",
            )
        elif (
            name == "icatplus_server"
            and value
            and value[0]
            and not value[0].startswith(("http://", "https://"))
        ):
            self.problem(
                where,
                f"icatplus_server {value[0]!r} must be an http:// or "
                "https:// URL (or empty for no e-logbook).",
            )
        elif name == "parameters":
            known = icat_parameter_names()
            seen: set[str] = set()
            for parameter in value:
                if parameter in seen:
                    self.problem(where, f"parameter {parameter!r} is listed twice.")
                seen.add(parameter)
                if parameter not in known:
                    self.problem(
                        where,
                        f"parameter {parameter!r} is not an ICAT parameter "
                        "known to icat-esrf-definitions." + _suggest(parameter, known),
                    )
        return len(self.problems) == before


def plan(files: Sequence[Path | str]) -> Registration:
    """Read and validate the YAML files; raise RegistrationError listing every problem.

    Pure: reads only the files, never Tango.
    """
    if not files:
        raise RegistrationError([Problem(Path("."), "", "no registration file given.")])
    problems: list[Problem] = []
    class_properties: dict[str, Properties] = {}
    class_origin: dict[tuple[str, str], str] = {}
    devices: dict[str, DevicePlan] = {}
    for file in files:
        path = Path(file)
        checker = _FileChecker(path)
        _check_file(checker, class_properties, class_origin, devices)
        problems.extend(checker.problems)
    if not problems:
        problems = _check_as_the_devices_read_it(class_properties, devices.values())
    if problems:
        raise RegistrationError(problems)
    return Registration(
        files=tuple(Path(f) for f in files),
        class_properties=class_properties,
        devices=tuple(devices.values()),
    )


def _check_as_the_devices_read_it(
    class_properties: Mapping[str, Mapping[str, PropertyValue]], devices: Iterable[DevicePlan]
) -> list[Problem]:
    """Run each device's properties, laid over its class's, through the devices' own reader.

    What icatcore.config refuses would put the device in FAULT: refuse it now instead.
    """
    from icatcore import config  # late: it loads the ICAT definitions (about a second)
    from icatcore.errors import ConfigurationError

    readers = {"MetaExperiment": config.meta_experiment, "MetadataManager": config.metadata_manager}
    problems: list[Problem] = []
    for device in devices:
        merged = {**class_properties.get(device.device_class, {}), **device.properties}
        try:
            readers[device.device_class](merged)
        except ConfigurationError as exc:
            problems.append(
                Problem(device.file, device.where, f"the device would refuse it: {exc}")
            )
    return problems


def _check_file(
    checker: _FileChecker,
    class_properties: dict[str, Properties],
    class_origin: dict[tuple[str, str], str],
    devices: dict[str, DevicePlan],
) -> None:
    try:
        data, root = _load(checker.path)
    except OSError as exc:
        checker.problem("", f"cannot read the file: {exc.strerror or exc}.")
        return
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        checker.problem(where, f"not valid YAML: {problem}.")
        return
    if data is None:
        checker.problem(
            "",
            "the file holds no entries: write a list of class and server "
            "entries (see examples/id00.yml).",
        )
        return
    if not isinstance(data, list):
        checker.problem(
            _line(root),
            "the file must be a YAML list of entries (each starting "
            f"with '- '), not a {type(data).__name__}.",
        )
        return
    for index, entry in enumerate(data):
        entry_node = _item(root, index)
        where = ", ".join(
            part
            for part in (f"entry {index + 1} ({_entry_label(entry)})", _line(entry_node))
            if part
        )
        if not isinstance(entry, Mapping):
            checker.problem(
                where,
                "an entry must be a mapping with either 'class' and "
                "'properties', or 'server', 'personal_name' and 'device'.",
            )
        elif "server" in entry or "device" in entry or "personal_name" in entry:
            _check_server_entry(checker, where, entry, entry_node, devices)
        elif "class" in entry:
            _check_class_entry(checker, where, entry, class_properties, class_origin)
        else:
            checker.problem(
                where,
                "the entry has neither 'class' nor 'server': write a class "
                "entry (class, properties) or a server entry (server, "
                "personal_name, device).",
            )


def _check_class_entry(
    checker: _FileChecker,
    where: str,
    entry: Mapping[Any, Any],
    class_properties: dict[str, Properties],
    class_origin: dict[tuple[str, str], str],
) -> None:
    checker.unknown_keys(where, "a class entry", entry, CLASS_ENTRY_KEYS)
    name = checker.device_class(where, entry.get("class"))
    if name is None:
        return
    if "properties" not in entry:
        checker.problem(where, "a class entry needs 'properties'.")
        return
    found = checker.properties(
        where, entry.get("properties"), CLASS_PROPERTIES[name], f"class {name} as a class property"
    )
    here = f"{checker.path} {where}"
    target = class_properties.setdefault(name, Properties())
    for prop, value in found.items():
        first = class_origin.get((name, prop.lower()))
        if first is not None:
            checker.problem(
                where, f"class property {name}.{prop} is already set in {first}: set it once."
            )
            continue
        class_origin[(name, prop.lower())] = here
        target[prop] = value


def _check_server_entry(
    checker: _FileChecker,
    where: str,
    entry: Mapping[Any, Any],
    entry_node: yaml.Node | None,
    devices: dict[str, DevicePlan],
) -> None:
    checker.unknown_keys(where, "a server entry", entry, SERVER_ENTRY_KEYS)
    server = checker.text(where, "server", entry.get("server"))
    if server is not None and server not in CLASSES:
        checker.problem(
            where,
            f"server {server!r} is not an ICAT server: use "
            f"{' or '.join(CLASSES)}." + _suggest(server, CLASSES),
        )
        server = None
    instance = checker.text(where, "personal_name", entry.get("personal_name"), allow_int=True)
    if instance is not None and "/" in instance:
        checker.problem(where, f"personal_name {instance!r} must not contain '/'.")
        instance = None
    raw_devices = entry.get("device")
    if not isinstance(raw_devices, list) or not raw_devices:
        checker.problem(
            where,
            "'device' must be a non-empty list of devices, each with "
            "tango_name, class and properties.",
        )
        return
    devices_node = _child(entry_node, "device")
    for number, device in enumerate(raw_devices, start=1):
        node = _item(devices_node, number - 1)
        name = device.get("tango_name") if isinstance(device, Mapping) else None
        dwhere = f"{where}, device {number} ({name if isinstance(name, str) else 'unnamed'})"
        if node is not None:
            dwhere += f", line {node.start_mark.line + 1}"
        if not isinstance(device, Mapping):
            checker.problem(
                dwhere, "a device must be a mapping with tango_name, class and properties."
            )
            continue
        checker.unknown_keys(dwhere, "a device", device, DEVICE_KEYS)
        tango_name = checker.text(dwhere, "tango_name", device.get("tango_name"))
        if tango_name is not None and not _DEVICE_NAME.match(tango_name):
            checker.problem(
                dwhere,
                f"tango_name {tango_name!r} is not a Tango device name of "
                "the form domain/family/member, e.g. id00/metadata/test.",
            )
            tango_name = None
        device_class = checker.device_class(dwhere, device.get("class"))
        if device_class is not None and server is not None and device_class != server:
            checker.problem(
                dwhere,
                f"a {device_class} device cannot run in the {server} "
                f"server: put it under an entry with server: {device_class}.",
            )
            device_class = None
        if device_class is None:
            continue
        props = checker.properties(
            dwhere,
            device.get("properties"),
            DEVICE_PROPERTIES[device_class],
            f"a {device_class} device",
        )
        raw_props = device.get("properties")
        for required in REQUIRED_DEVICE_PROPERTIES[device_class]:
            if not isinstance(raw_props, Mapping) or required not in raw_props:
                checker.problem(dwhere, f"required device property {required!r} is missing.")
            elif required in props and not any(props[required]):
                checker.problem(dwhere, f"required device property {required!r} is empty.")
        if tango_name is None or server is None or instance is None:
            continue
        first = devices.get(tango_name.lower())
        if first is not None:
            checker.problem(
                dwhere, f"device {tango_name} is already defined in {first.origin}: define it once."
            )
            continue
        devices[tango_name.lower()] = DevicePlan(
            name=tango_name,
            device_class=device_class,
            server=f"{server}/{instance}",
            properties=props,
            file=checker.path,
            where=dwhere,
        )


# -- changes against a database ----------------------------------------------------------


class TangoDatabase(Protocol):
    """The part of tango.Database registration uses (a fake can stand in for it)."""

    def get_device_info(self, name: str) -> Any: ...
    def add_device(self, info: Any) -> None: ...
    def get_class_property(self, name: str, props: list[str]) -> dict[str, Sequence[str]]: ...
    def put_class_property(self, name: str, props: dict[str, list[str]]) -> None: ...
    def delete_class_property(self, name: str, props: list[str]) -> None: ...
    def get_device_property(self, name: str, props: list[str]) -> dict[str, Sequence[str]]: ...
    def put_device_property(self, name: str, props: dict[str, list[str]]) -> None: ...
    def delete_device_property(self, name: str, props: list[str]) -> None: ...


@dataclass(frozen=True)
class AddDevice:
    """Register a device (or move it to another server/class)."""

    name: str
    device_class: str
    server: str
    was: str | None = None  # "Server/instance (Class)" when it exists elsewhere

    def __str__(self) -> str:
        if self.was is None:
            return f"+ device {self.name} ({self.server})"
        return f"~ device {self.name}: {self.was} -> {self.server} ({self.device_class})"


@dataclass(frozen=True)
class SetProperty:
    """Set (or, with an empty value, delete) one class or device property."""

    scope: str  # "class" or "device"
    owner: str  # class name or device name
    name: str
    new: PropertyValue
    old: PropertyValue | None = None  # None: absent from the database
    _hidden: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hidden", is_secret(self.name))

    def __str__(self) -> str:
        label = f"{self.scope} property {self.owner}.{self.name}"
        if self.old is None:
            return f"+ {label}: {show_value(self.name, self.new)}"
        if not self.new:
            return f"- {label}: {show_value(self.name, self.old)}"
        return f"~ {label}: {show_value(self.name, self.old)} -> {show_value(self.name, self.new)}"

    def __repr__(self) -> str:  # a repr in a traceback or log must not leak a secret
        shown = "***" if self._hidden else f"{self.old!r} -> {self.new!r}"
        return f"SetProperty({self.scope} {self.owner}.{self.name}: {shown})"


Change = AddDevice | SetProperty


def changes(registration: Registration, db: TangoDatabase) -> list[Change]:
    """What must be written so the database holds the registration; empty when it does.

    Properties the YAML does not mention are left alone (another tool may own them).
    """
    import tango  # late: plan() and the listing need no Tango

    result: list[Change] = []
    for device in registration.devices:
        try:
            info = db.get_device_info(device.name)
        except tango.DevFailed as exc:
            if exc.args and getattr(exc.args[0], "reason", "") == "DB_DeviceNotDefined":
                result.append(AddDevice(device.name, device.device_class, device.server))
                continue
            raise
        if (info.ds_full_name.lower(), info.class_name) != (
            device.server.lower(),
            device.device_class,
        ):
            was = f"{info.ds_full_name} ({info.class_name})"
            result.append(AddDevice(device.name, device.device_class, device.server, was))
    for class_name, wanted in registration.class_properties.items():
        if wanted:
            current = db.get_class_property(class_name, list(wanted))
            result.extend(_property_changes("class", class_name, wanted, current))
    for device in registration.devices:
        if device.properties:
            current = db.get_device_property(device.name, list(device.properties))
            result.extend(_property_changes("device", device.name, device.properties, current))
    return result


def _property_changes(
    scope: str,
    owner: str,
    wanted: Mapping[str, PropertyValue],
    current: Mapping[str, Sequence[str]],
) -> list[Change]:
    found: list[Change] = []
    for name, value in wanted.items():
        old = tuple(str(v) for v in current.get(name, ()))
        if old == value:
            continue  # includes "empty wanted, absent there": Tango stores no empty property
        found.append(SetProperty(scope, owner, name, value, old if old else None))
    return found


def apply(to_apply: Sequence[Change], db: TangoDatabase) -> None:
    """Write the changes in order: devices first, so their properties have an owner."""
    import tango

    for change in to_apply:
        if isinstance(change, AddDevice):
            info = tango.DbDevInfo()
            info.name = change.name
            info._class = change.device_class
            info.server = change.server
            db.add_device(info)
        elif change.scope == "class":
            if change.new:
                db.put_class_property(change.owner, {change.name: list(change.new)})
            else:
                db.delete_class_property(change.owner, [change.name])
        elif change.new:
            db.put_device_property(change.owner, {change.name: list(change.new)})
        else:
            db.delete_device_property(change.owner, [change.name])
