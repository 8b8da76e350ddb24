"""The facility's ICAT parameter names and how their values are checked and written.

The names and types come from `icat-esrf-definitions`, the package ESRF's own client
(pyicat-plus) validates against: a name it does not know, ICAT does not know either.
The model is introspected once (cached) into plain `ParameterSpec` records so that
building a dataset document never runs pydantic.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from icat_servers.icatcore import facility
from icat_servers.icatcore.errors import InvalidInput
from icat_servers.icatcore.records import ParameterValue

MAX_TEXT_LENGTH = 4096
MAX_DATASET_NAME_LENGTH = 255


class ValueKind(Enum):
    """How pyicat-plus's model coerces a value of this parameter before writing it."""

    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATETIME = "datetime"
    CHOICE = "choice"
    QUANTITY = "quantity"
    CUSTOM = "custom"
    """A list-like type with its own parser in icat-esrf-definitions."""
    CONSTRAINED = "constrained"
    """A plain type with a length, pattern or bound constraint: checked the slow way."""


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    """One ICAT parameter as the serializer needs it: its place, its type, its fate."""

    name: str
    rank: int
    """Position among the parameters of a document, in pyicat-plus's output order."""
    kind: ValueKind
    custom_serialization: bool
    """True when the definitions render it with their own ICAT serializer."""
    annotation: Any
    meta: Any = None
    """The icat-esrf-definitions type metadata (list or quantity parser), if any."""
    choices: tuple[str, ...] = ()
    quantity_float: bool = False
    """A quantity whose magnitude is forced to float (e.g. pixel sizes)."""
    renamed_to: str | None = None
    """A deprecated name whose value ICAT stores under this newer name."""


@cache
def parameter_specs() -> dict[str, ParameterSpec]:
    """Every ICAT parameter name with its spec, computed once from the definitions."""
    field_annotations = facility.field_annotations()
    model = facility.model()
    infos = model.icat_fields()
    ranks = _output_ranks(model)
    specs: dict[str, ParameterSpec] = {}
    for name, info in infos.items():
        annotation = info.annotation
        custom = field_annotations.has_custom_serialization(annotation)
        kind, meta, choices, quantity_float = _classify(annotation, info.constraints)
        specs[name] = ParameterSpec(
            name=name,
            rank=ranks[name],
            kind=kind,
            custom_serialization=custom,
            annotation=annotation,
            meta=meta,
            choices=choices,
            quantity_float=quantity_float,
            renamed_to=info.new_icat_name or None,
        )
    return specs


def _output_ranks(model: Any) -> dict[str, int]:
    """The order in which `IcatNexusBaseModel.to_icat_dict` emits ICAT names.

    It walks the fields of a group: sub-groups are written when met, the group's own
    fields afterwards, those with a custom ICAT serializer first. A linked field shares
    its target's name; a name keeps the place where it was first written.
    """
    field_annotations = facility.field_annotations()
    icat_fields = facility.icat_fields()
    IcatNexusBaseModel = facility.base_model()

    order: dict[str, int] = {}

    def walk(group: Any, group_name: str) -> None:
        custom_fields: list[str] = []
        json_fields: list[str] = []
        for field_name, field_info in group.model_fields.items():
            if not icat_fields.is_icat_field(field_info):
                continue
            short_icat_name = icat_fields.get_short_icat_name(field_name, field_info)
            annotation = field_info.rebuild_annotation()
            sub_group = field_annotations.get_field_type(annotation, IcatNexusBaseModel)
            if sub_group:
                walk(sub_group, icat_fields.full_icat_group_name(group_name, short_icat_name))
                continue
            icat_name = icat_fields.full_icat_field_name(field_info, group_name, short_icat_name)
            if field_annotations.has_custom_serialization(annotation):
                custom_fields.append(icat_name)
            else:
                json_fields.append(icat_name)
        for icat_name in custom_fields + json_fields:
            order.setdefault(icat_name, len(order))

    walk(model, "")
    return order


def _classify(annotation: Any, constraints: Any) -> tuple[ValueKind, Any, tuple[str, ...], bool]:
    import datetime

    CustomTypeMetadata = facility.custom_type_metadata()
    QuantityMeta = facility.quantity_meta()
    field_annotations = facility.field_annotations()

    quantity = field_annotations.get_field_metadata(annotation, QuantityMeta)
    if quantity is not None:
        value_type = quantity.value_type
        if value_type is None or value_type is float:
            return ValueKind.QUANTITY, quantity, (), value_type is float
        return ValueKind.CUSTOM, quantity, (), False
    custom = field_annotations.get_field_metadata(annotation, CustomTypeMetadata)
    if custom is not None:
        return ValueKind.CUSTOM, custom, (), False
    if any(value is not None for value in constraints) or _has_bounds(annotation):
        return ValueKind.CONSTRAINED, None, (), False
    base = _strip_optional(annotation)
    if get_origin(base) is Literal:
        return ValueKind.CHOICE, None, tuple(str(c) for c in get_args(base)), False
    simple = {
        str: ValueKind.TEXT,
        int: ValueKind.INT,
        float: ValueKind.FLOAT,
        bool: ValueKind.BOOL,
        datetime.datetime: ValueKind.DATETIME,
    }
    if base in simple:
        return simple[base], None, (), False
    return ValueKind.CONSTRAINED, None, (), False


def _strip_optional(annotation: Any) -> Any:
    """`Optional[X]` -> `X`; anything else unchanged."""
    if get_origin(annotation) in (Union, UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _has_bounds(annotation: Any) -> bool:
    """Annotated metadata such as Gt(0) that the plain fast paths would not apply."""
    return hasattr(annotation, "__metadata__")


@cache
def parameter_names() -> frozenset[str]:
    """The ICAT parameter names the facility's ingester knows."""
    return frozenset(parameter_specs())


def unknown_parameters(names: Iterable[str]) -> list[str]:
    """The names that are no ICAT parameter, in the order given, without repeats."""
    known = parameter_names()
    unknown: list[str] = []
    for name in names:
        if name not in known and name not in unknown:
            unknown.append(name)
    return unknown


_XML_FORBIDDEN = re.compile("[\ud800-\udfff\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Unicode category Cc, as one regular expression: a per-character loop cost ~100 us."""
_CONTROL_BUT_TAB_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def check_text(
    what: str, value: str, *, max_length: int = MAX_TEXT_LENGTH, multiline: bool = False
) -> str:
    """Refuse text that cannot travel in an ICAT document or would corrupt a log.

    Control characters (Unicode category Cc) are refused; with `multiline` a tab or a
    newline is accepted, as free text (a logbook comment) may need them.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {type(value).__name__}: send a string")
    if len(value) > max_length:
        raise InvalidInput(
            f"{what} is {len(value)} characters long, more than the {max_length} allowed: "
            "send a shorter text"
        )
    control = (_CONTROL_BUT_TAB_NEWLINE if multiline else _CONTROL).search(value)
    if control is not None:
        raise InvalidInput(
            f"{what} contains the control character U+{ord(control.group()):04X} at position "
            f"{control.start()}: remove it"
        )
    forbidden = _XML_FORBIDDEN.search(value)
    if forbidden is not None:
        raise InvalidInput(
            f"{what} contains U+{ord(forbidden.group()):04X} at position {forbidden.start()}, "
            "which XML cannot carry (lone surrogate or non-character): remove it"
        )
    return value


def check_dataset_name(name: str) -> str:
    """A dataset name becomes a directory: it must stay one path component."""
    check_text("dataset name", name, max_length=MAX_DATASET_NAME_LENGTH)
    if "/" in name:
        raise InvalidInput(
            f"dataset name {name!r} contains '/': a dataset name is one directory name, "
            "use another character"
        )
    if name in (".", ".."):
        raise InvalidInput(
            f"dataset name {name!r} is a relative path component: choose a real name"
        )
    return name


_SCALAR_TYPES = (str, int, float, bool)


def parse_parameters(text: str) -> dict[str, ParameterValue]:
    """Parse the SetParameters argument: a JSON object of ICAT name to value.

    All or nothing: every name must be an ICAT parameter (all unknown ones are listed
    in one error) and every value a string, number, boolean or flat list of those.
    """
    if not isinstance(text, str):
        raise InvalidInput("SetParameters expects a JSON text")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"SetParameters: invalid JSON ({error.msg} at line {error.lineno} column "
            f"{error.colno}): send a JSON object such as "
            '{"Sample_description": "powder"}'
        ) from None
    except RecursionError:
        raise InvalidInput("SetParameters: JSON nested too deeply: send a flat object") from None
    if not isinstance(document, dict):
        raise InvalidInput(
            f"SetParameters: expected a JSON object of ICAT parameter name to value, got "
            f"a JSON {type(document).__name__}"
        )
    unknown = unknown_parameters(document)
    if unknown:
        raise InvalidInput(
            f"SetParameters: unknown ICAT parameter(s): {', '.join(map(repr, unknown))}; "
            "nothing was set. Check the names against the icat-esrf-definitions list"
        )
    parameters: dict[str, ParameterValue] = {}
    for name, value in document.items():
        parameters[name] = _checked_value(name, value)
    return parameters


def _checked_value(name: str, value: Any) -> ParameterValue:
    if isinstance(value, _SCALAR_TYPES):
        _check_scalar(name, value)
        return value
    if isinstance(value, list):
        items: list[str | int | float | bool] = []
        for item in value:
            if not isinstance(item, _SCALAR_TYPES):
                raise InvalidInput(
                    f"parameter {name}: a list may only hold strings, numbers and booleans, "
                    f"got {_json_type(item)}: flatten it"
                )
            _check_scalar(name, item)
            items.append(item)
        return tuple(items)
    raise InvalidInput(
        f"parameter {name}: {_json_type(value)} is not a value: send a string, a number, "
        "a boolean or a flat list of those"
    )


def _check_scalar(name: str, value: str | int | float | bool) -> None:
    if isinstance(value, str):
        check_text(f"parameter {name}", value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(
            f"parameter {name}: {value} (NaN or Infinity) is not a number JSON or ICAT "
            'can hold: send it as a string, e.g. "nan"'
        )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
