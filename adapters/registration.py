"""Register the ICAT servers in a Tango database from the beamline's YAML files.

Beamline staff describe the servers in the shape of the installation page:
entries with `class` + `properties` hold class properties; entries with
`server`, `personal_name` and a `device` list hold devices. Everything is
validated before the database is touched, because a half-registered beamline
(a device without its queue, a typo in a property name the device silently
ignores) is a dataset that never reaches ICAT. The changes are then computed
against what the database holds, so a second run writes nothing.

Two checks, each done once: the file's shape by the pydantic models below (their
errors located by file, entry, device and line), the values by the devices' own
configuration reader, `icatcore.config`, and by nothing else.

`plan` is pure (no Tango); `changes` and `notes` read the database; `apply` writes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from icat_servers.icatcore import config
from icat_servers.icatcore.config import CLASS_PROPERTIES, DEVICE_PROPERTIES, UNUSED
from icat_servers.icatcore.errors import ConfigurationError

CLASSES = ("MetaExperiment", "MetadataManager")
"""The two device classes, each run by the console script of the same name."""

PropertyValue = tuple[str, ...]
"""Tango properties are lists of strings."""


def is_secret(name: str) -> bool:
    """Property values that must never be printed, logged or put in an error."""
    lowered = name.lower()
    if lowered.endswith("file"):
        return False  # API_KEY_FILE, queuePasscodeFile: a path, not the secret
    return lowered == "api_key" or "passcode" in lowered or "password" in lowered


def show_value(name: str, value: PropertyValue | None) -> str:
    """A property value as a change listing shows it, secrets masked."""
    if value is None:
        return "(absent)"
    if is_secret(name):
        return "***"
    return json.dumps(list(value))


def _suggest(name: str, known: Iterable[str]) -> str:
    close = config.nearest(name, known)
    return f" Did you mean {close!r}?" if close else ""


# -- the shape of a file ------------------------------------------------------------------


def _refuse(message: str, hint: str = "") -> NoReturn:
    """A shape error in our words; the message never holds a property's value."""
    raise PydanticCustomError("icat", "{message}", {"message": message, "hint": hint})


def _text(what: str, *, allow_int: bool = False) -> Any:
    def check(value: Any) -> str:
        if isinstance(value, str) and value.strip():
            return value.strip()
        if allow_int and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is None or value == "":
            _refuse(f"{what} is missing or empty: write it as text.")
        _refuse(f"{what} must be text, not {type(value).__name__}: quote it.")

    return BeforeValidator(check)


def _class_name(value: str) -> str:
    if value not in CLASSES:
        _refuse(
            f"class {value!r} is not an ICAT server class: use one of {', '.join(CLASSES)}."
            + _suggest(value, CLASSES)
        )
    return value


def _server_name(value: str) -> str:
    if value not in CLASSES:
        _refuse(
            f"server {value!r} is not an ICAT server: use {' or '.join(CLASSES)}."
            + _suggest(value, CLASSES)
        )
    return value


def _instance(value: str) -> str:
    if "/" in value:
        _refuse(f"personal_name {value!r} must not contain '/'.")
    return value


def _tango_name(value: str) -> str:
    try:
        config.device_name(value, "tango_name")
    except ConfigurationError as error:
        _refuse(f"{error}.")
    return value


def _property_value(value: Any) -> PropertyValue:
    """YAML scalars and lists of them as Tango's list of strings; the error names no value
    (the property's name is added from the error's location)."""
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
            _refuse("has no value: give one, or [] to leave it empty.")
        elif isinstance(item, Mapping) and len(item) == 1 and item is value:
            ((key, inner),) = item.items()
            hint = f' If you meant the text "{{{key}}}", quote it.' if inner is None else ""
            _refuse("is a mapping, not text or a list of text.", hint)
        else:
            kind = type(item).__name__
            listed = "a list of " if item is not value else ""
            _refuse(f"must be text or a list of text, not {listed}{kind}.")
    return tuple(out)


PropertyMap = dict[str, Annotated[PropertyValue, BeforeValidator(_property_value)]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DeviceEntry(_Strict):
    tango_name: Annotated[str, BeforeValidator(_tango_name), _text("tango_name")]
    device_class: Annotated[str, BeforeValidator(_class_name), _text("class")] = Field(
        alias="class"
    )
    properties: PropertyMap | None = None


class ClassEntry(_Strict):
    device_class: Annotated[str, BeforeValidator(_class_name), _text("class")] = Field(
        alias="class"
    )
    properties: PropertyMap


class ServerEntry(_Strict):
    server: Annotated[str, BeforeValidator(_server_name), _text("server")]
    personal_name: Annotated[
        str, BeforeValidator(_instance), _text("personal_name", allow_int=True)
    ]
    device: list[DeviceEntry] = Field(min_length=1)


def _entry_kind(entry: Any) -> str | None:
    if isinstance(entry, Mapping):
        if "server" in entry or "device" in entry or "personal_name" in entry:
            return "server"
        if "class" in entry:
            return "class"
    return None


ENTRY: TypeAdapter[ClassEntry | ServerEntry] = TypeAdapter(
    Annotated[
        Annotated[ClassEntry, Tag("class")] | Annotated[ServerEntry, Tag("server")],
        Discriminator(_entry_kind, custom_error_type="entry_kind", custom_error_message="kind"),
    ]
)
"""One entry of a registration file: a class entry or a server entry."""

_KEYS = {
    "class": ("a class entry", ("class", "properties")),
    "server": ("a server entry", ("server", "personal_name", "device")),
    "device": ("a device", ("tango_name", "class", "properties")),
}
DEVICE_LIST = (
    "'device' must be a non-empty list of devices, each with tango_name, class and properties."
)


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
class Problem:
    """One thing wrong (or worth knowing) in one file, located for the person who must fix it."""

    file: Path
    where: str  # "entry 3 (server MetadataManager/icatservers), line 12" or ""
    message: str

    def __str__(self) -> str:
        located = f"{self.file}: {self.where}" if self.where else str(self.file)
        return f"{located}: {self.message}"


@dataclass(frozen=True)
class Registration:
    """What the YAML files ask the Tango database to hold, validated."""

    files: tuple[Path, ...]
    class_properties: Mapping[str, Mapping[str, PropertyValue]]
    devices: tuple[DevicePlan, ...]
    notes: tuple[Problem, ...] = ()
    """What is accepted but worth a warning: properties these servers do not use, secrets
    written in the file. `notes()` adds what only the database can tell."""


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


def _device_where(where: str, raw: Any, node: yaml.Node | None, index: int) -> str:
    """`where` of the index-th device of a server entry (raw: the entry as loaded)."""
    devices = raw.get("device") if isinstance(raw, Mapping) else None
    device = devices[index] if isinstance(devices, list) and index < len(devices) else None
    name = device.get("tango_name") if isinstance(device, Mapping) else None
    located = f"{where}, device {index + 1} ({name if isinstance(name, str) else 'unnamed'})"
    device_node = _item(_child(node, "device"), index)
    return f"{located}, {_line(device_node)}" if device_node is not None else located


def _shape_problem(
    error: ErrorDetails, raw: Any, where: str, node: yaml.Node | None
) -> tuple[str, str]:
    """One pydantic error of one entry in our words, and where: its entry or device.

    Never uses the error's input: it may be a secret.
    """
    loc = list(error["loc"])
    kind = str(loc.pop(0)) if loc else ""
    if loc[:1] == ["device"] and len(loc) >= 2 and isinstance(loc[1], int):
        where = _device_where(where, raw, node, loc[1])
        owner, loc = "device", loc[2:]
    else:
        owner = kind
    what, keys = _KEYS.get(owner, ("an entry", ()))
    context = error.get("ctx") or {}
    field = str(loc[0]) if loc else ""
    message: str
    if error["type"] == "entry_kind":
        message = (
            "the entry has neither 'class' nor 'server': write a class entry (class, "
            "properties) or a server entry (server, personal_name, device)."
            if isinstance(raw, Mapping)
            else "an entry must be a mapping with either 'class' and 'properties', or "
            "'server', 'personal_name' and 'device'."
        )
    elif error["type"] == "icat" and field == "properties" and len(loc) >= 2:
        name = str(loc[1])
        hint = "" if is_secret(name) else str(context.get("hint", ""))
        message = f"property {name!r} {context['message']}{hint}"
    elif error["type"] == "icat":
        message = str(context["message"])
    elif error["type"] == "extra_forbidden":
        message = (
            f"unknown key {field!r} in {what}; allowed: {', '.join(sorted(keys))}."
            + _suggest(field, keys)
        )
    elif field == "device" and (len(loc) == 1 or error["type"] in ("too_short", "list_type")):
        message = DEVICE_LIST
    elif field == "properties" and len(loc) == 1 and error["type"] == "missing":
        message = f"{what} needs 'properties'."
    elif field == "properties" and len(loc) == 1:
        message = "properties must be a mapping of name: value."
    elif field == "properties":
        message = f"property name {loc[1]!r} must be text."
    elif error["type"] == "missing":
        message = f"{field} is missing or empty: write it as text."
    elif owner == "device" and not loc:
        message = "a device must be a mapping with tango_name, class and properties."
    else:  # a shape the models allow no other way
        message = f"{field or 'the entry'} is not as expected ({error['msg']})."
    return where, message


def plan(files: Sequence[Path | str]) -> Registration:
    """Read and validate the YAML files; raise RegistrationError listing every problem.

    Pure: reads only the files, never Tango.
    """
    if not files:
        raise RegistrationError([Problem(Path("."), "", "no registration file given.")])
    reader = _Reader()
    for file in files:
        reader.read(Path(file))
    reader.check_values()
    if reader.problems:
        raise RegistrationError(reader.problems)
    return Registration(
        files=tuple(Path(f) for f in files),
        class_properties=reader.class_properties,
        devices=tuple(reader.devices.values()),
        notes=tuple(reader.notes),
    )


class _PlanSecrets:
    """The SecretSource of a plan: checks the secret properties, reads nothing (the files
    and the environment are the server's, not the registering user's)."""

    def read_file(self, path: str) -> str:
        return "(not read by icat-servers register)"

    def environment(self, name: str) -> str:
        return ""


class _Reader:
    """Reads every file, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.notes: list[Problem] = []
        self.class_properties: dict[str, Properties] = {}
        self.class_where: dict[str, Problem] = {}
        """Where each class's properties were first set (file and entry)."""
        self.class_origin: dict[tuple[str, str], str] = {}
        self.devices: dict[str, DevicePlan] = {}
        self.checked: list[DevicePlan] = []
        """Every device whose own entry is well formed, duplicates included: what
        check_values runs through the devices' reader."""

    def problem(self, file: Path, where: str, message: str) -> None:
        self.problems.append(Problem(file, where, message))

    def read(self, path: Path) -> None:
        try:
            data, root = _load(path)
        except OSError as exc:
            self.problem(path, "", f"cannot read the file: {exc.strerror or exc}.")
            return
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            reason = getattr(exc, "problem", None) or str(exc)
            self.problem(path, where, f"not valid YAML: {reason}.")
            return
        if data is None:
            self.problem(
                path,
                "",
                "the file holds no entries: write a list of class and server entries "
                "(see examples/id00.yml).",
            )
            return
        if not isinstance(data, list):
            self.problem(
                path,
                _line(root),
                "the file must be a YAML list of entries (each starting with '- '), "
                f"not a {type(data).__name__}.",
            )
            return
        for index, raw in enumerate(data):
            node = _item(root, index)
            where = ", ".join(
                part for part in (f"entry {index + 1} ({_entry_label(raw)})", _line(node)) if part
            )
            try:
                entry = ENTRY.validate_python(raw)
            except ValidationError as error:
                for details in error.errors(include_url=False, include_input=False):
                    self.problem(path, *_shape_problem(details, raw, where, node))
                continue
            if isinstance(entry, ClassEntry):
                self.class_entry(path, where, entry)
            else:
                self.server_entry(path, where, entry, raw, node)

    def names(
        self,
        path: Path,
        where: str,
        given: Mapping[str, PropertyValue],
        allowed: frozenset[str],
        owner: str,
    ) -> Properties:
        """The properties whose names the devices read; the others are problems."""
        result = Properties()
        lowered: dict[str, str] = {}
        for name, value in given.items():
            if name not in allowed:
                self.problem(
                    path,
                    where,
                    f"property {name!r} is not read by {owner}; known: "
                    f"{', '.join(sorted(allowed))}." + _suggest(name, allowed),
                )
            elif name.lower() in lowered:  # Tango property names ignore case
                self.problem(
                    path,
                    where,
                    f"property {name!r} is also written as {lowered[name.lower()]!r}: keep one.",
                )
            else:
                lowered[name.lower()] = name
                result[name] = value
        self.note_what_is_worth_knowing(path, where, result)
        return result

    def note_what_is_worth_knowing(
        self, path: Path, where: str, properties: Mapping[str, PropertyValue]
    ) -> None:
        unused = sorted(name for name in properties if name in UNUSED)
        if unused:
            self.notes.append(
                Problem(
                    path,
                    where,
                    f"{', '.join(unused)}: not used by these servers (tango-metadata's "
                    "properties, accepted and written as given; they may be removed).",
                )
            )
        for secret in config.SECRETS.values():
            if any(properties.get(secret.name, ())):
                self.notes.append(
                    Problem(
                        path,
                        where,
                        f"{secret.name} is a secret written in this file, and anyone who can "
                        "read the Tango database can read it: put it in a file readable only "
                        f"by the server's user (chmod 600) and set {secret.file_property} to "
                        f"its path instead, or set {secret.environment} in the server's "
                        "environment.",
                    )
                )

    def class_entry(self, path: Path, where: str, entry: ClassEntry) -> None:
        name = entry.device_class
        found = self.names(
            path,
            where,
            entry.properties,
            CLASS_PROPERTIES[name],
            f"class {name} as a class property",
        )
        here = f"{path} {where}"
        target = self.class_properties.setdefault(name, Properties())
        self.class_where.setdefault(name, Problem(path, where, ""))
        for prop, value in found.items():
            first = self.class_origin.get((name, prop.lower()))
            if first is not None:
                self.problem(
                    path,
                    where,
                    f"class property {name}.{prop} is already set in {first}: set it once.",
                )
                continue
            self.class_origin[(name, prop.lower())] = here
            target[prop] = value

    def server_entry(
        self, path: Path, where: str, entry: ServerEntry, raw: Any, node: yaml.Node | None
    ) -> None:
        for index, device in enumerate(entry.device):
            dwhere = _device_where(where, raw, node, index)
            if device.device_class != entry.server:
                self.problem(
                    path,
                    dwhere,
                    f"a {device.device_class} device cannot run in the {entry.server} "
                    f"server: put it under an entry with server: {device.device_class}.",
                )
                continue
            before = len(self.problems)
            properties = self.names(
                path,
                dwhere,
                device.properties or {},
                DEVICE_PROPERTIES[device.device_class],
                f"a {device.device_class} device",
            )
            planned = DevicePlan(
                name=device.tango_name,
                device_class=device.device_class,
                server=f"{entry.server}/{entry.personal_name}",
                properties=properties,
                file=path,
                where=dwhere,
            )
            if len(self.problems) == before:
                self.checked.append(planned)
            first = self.devices.get(device.tango_name.lower())
            if first is not None:
                self.problem(
                    path,
                    dwhere,
                    f"device {device.tango_name} is already defined in {first.origin}: "
                    "define it once.",
                )
                continue
            self.devices[device.tango_name.lower()] = planned

    def check_values(self) -> None:
        """Each class's properties, then each well-formed device's laid over its class's,
        through the devices' own reader: what icatcore.config refuses would put a device in
        FAULT. Runs also when other entries have problems, so every problem shows at once."""
        secrets = _PlanSecrets()
        refused: set[str] = set()
        for name, properties in self.class_properties.items():
            try:
                config.class_delivery(name, properties, secrets=secrets)
            except ConfigurationError as exc:
                refused.add(name)
                at = self.class_where[name]
                self.problem(at.file, at.where, f"the devices would refuse it: {exc}")
        for device in self.checked:
            if device.device_class in refused:
                continue
            merged = {**self.class_properties.get(device.device_class, {}), **device.properties}
            try:
                config.READERS[device.device_class](merged, secrets=secrets)
            except ConfigurationError as exc:
                self.problem(device.file, device.where, f"the device would refuse it: {exc}")


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


def notes(registration: Registration, db: TangoDatabase) -> list[Problem]:
    """Warnings for the person registering: the plan's notes, and each `metaExperimentDevice`
    that names no MetaExperiment in the files nor in the database (a typo would leave the
    MetadataManager waiting for it for ever)."""
    import tango  # late: plan() and the listing need no Tango

    found = list(registration.notes)
    planned = {device.name.lower(): device for device in registration.devices}
    for device in registration.devices:
        leader = next(iter(device.properties.get("metaExperimentDevice", ())), "").lower()
        if not leader:
            continue
        if leader in planned:
            kind = planned[leader].device_class
        else:
            try:
                kind = db.get_device_info(leader).class_name
            except tango.DevFailed as exc:
                if not exc.args or getattr(exc.args[0], "reason", "") != "DB_DeviceNotDefined":
                    raise
                guess = _suggest(
                    leader,
                    [d.name for d in planned.values() if d.device_class != "MetadataManager"],
                )
                found.append(
                    Problem(
                        device.file,
                        device.where,
                        f"metaExperimentDevice {leader!r} is a device neither in these files nor "
                        "in the Tango database: the MetadataManager would wait for it for ever. "
                        "Check the name, or register that MetaExperiment too." + guess,
                    )
                )
                continue
        if kind != "MetaExperiment":
            found.append(
                Problem(
                    device.file,
                    device.where,
                    f"metaExperimentDevice {leader!r} is a {kind} device, not a MetaExperiment: "
                    "name the MetaExperiment this device follows.",
                )
            )
    return found


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
