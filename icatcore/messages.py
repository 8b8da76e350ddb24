"""The XML documents the ICAT ingester consumes, written by hand.

They must be the documents ESRF's pyicat-plus writes for the same dataset (the
ingester must not tell them apart): same elements in the same order, the same
parameter list, values formatted the same way. pyicat-plus gets there through
pydantic and xsdata (~20 ms a dataset); here the per-parameter type knowledge is
precomputed in `icatcore.definitions` and the text is assembled directly.

How pyicat-plus orders the parameters, mirrored here: the ones its model accepts in
the model's order, then the ones whose value the model refused (sent as given), then
names the model does not know, both in input order.
"""

from __future__ import annotations

import datetime
import posixpath
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from itertools import chain
from numbers import Number
from typing import Any

from icat_servers.icatcore import facility
from icat_servers.icatcore.definitions import ParameterSpec, ValueKind, parameter_specs
from icat_servers.icatcore.errors import InvalidInput
from icat_servers.icatcore.records import DatasetRecord, InvestigationRecord

NAMESPACE = "http://www.esrf.fr/icat"
_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'

_INVALID = object()
"""A value pyicat-plus's model refuses: it is then sent unconverted, after the others."""


class _ModelRefused(Exception):
    """pyicat-plus's model fails even without the refused values: all go unconverted."""


_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NEEDS_ESCAPE = re.compile("[&<>\r\n]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;", "\n": "&#10;"}

_FLOAT_TEXT = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", re.ASCII)
_INT_TEXT = re.compile(r"[+-]?\d{1,18}", re.ASCII)
_BOOL_TEXT = {
    "true": "true",
    "True": "true",
    "1": "true",
    "false": "false",
    "False": "false",
    "0": "false",
}
_EXACT_FLOAT = 2**53


def dataset_xml(record: DatasetRecord, *, machine: str, software: str) -> bytes:
    """The `<tns:dataset>` document registering `record`; `machine`/`software` name the sender.

    Raises InvalidInput when a text holds a character XML 1.0 cannot carry.
    """
    parameters = _rendered_parameters(_input_parameters(record, machine, software))
    start = _xsd_datetime(record.start)
    end = _xsd_datetime(record.end)
    complete = "true" if parameters.get("complete", "true") == "true" else "false"
    parts = [
        _DECLARATION,
        f'<tns:dataset xmlns:tns="{NAMESPACE}" complete="{complete}">',
        _element("investigation", "proposal", parameters["proposal"]),
        _element("instrument", "beamline", parameters["beamlineID"]),
        _element("name", "dataset name", parameters["datasetName"]),
        _element("location", "location", parameters["location"]),
        f"<tns:startDate>{start}</tns:startDate><tns:endDate>{end}</tns:endDate>",
        "<tns:sample>",
        _element("name", "sample", parameters["Sample_name"]),
        "</tns:sample>",
    ]
    parts.append(_datafiles_xml(record.datafiles))
    parts.append(_parameters_xml(parameters))
    parts.append("</tns:dataset>")
    return "".join(parts).encode("utf-8")


# Markup stand-ins while all texts are checked and escaped in one pass: C0 controls,
# which no accepted text can contain (XML cannot carry them).
_ROW, _CELL, _FILE = "\x01", "\x02", "\x03"
_XML_UNSAFE_BULK = re.compile("[\x00\x04-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape_bulk(blob: str, texts: Iterable[str]) -> str | None:
    """`blob` (the `texts` joined) escaped for element text, or None for the careful path."""
    if not all(map(str.isprintable, texts)) and _XML_UNSAFE_BULK.search(blob) is not None:
        return None
    blob = blob.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if "\r" in blob or "\n" in blob:
        blob = blob.replace("\r", "&#13;").replace("\n", "&#10;")
    return blob


def _datafiles_xml(datafiles: tuple[str, ...]) -> str:
    if not datafiles:
        return ""
    blob = _FILE.join(datafiles)
    escaped = _escape_bulk(blob, datafiles)
    if escaped is None or blob.count(_FILE) != len(datafiles) - 1 or _ROW in blob or _CELL in blob:
        return "".join(
            f"<tns:datafile>{_element('location', 'data file', path)}</tns:datafile>"
            for path in datafiles
        )
    xml = (
        "<tns:datafile><tns:location>"
        + escaped.replace(_FILE, "</tns:location></tns:datafile><tns:datafile><tns:location>")
        + "</tns:location></tns:datafile>"
    )
    if "" in datafiles:  # xsdata writes an empty element short
        xml = xml.replace("<tns:location></tns:location>", "<tns:location/>")
    return xml


def _parameters_xml(parameters: dict[str, str]) -> str:
    blob = _ROW.join(map(_CELL.join, parameters.items()))
    escaped = _escape_bulk(blob, chain(parameters, parameters.values()))
    if (
        escaped is None
        or blob.count(_ROW) != len(parameters) - 1
        or blob.count(_CELL) != len(parameters)
        or _FILE in blob
    ):
        return "".join(
            "<tns:parameter>"
            + _element("name", "parameter name", name)
            + _element("value", f"parameter {name}", value)
            + "</tns:parameter>"
            for name, value in parameters.items()
        )
    xml = (
        "<tns:parameter><tns:name>"
        + escaped.replace(_CELL, "</tns:name><tns:value>").replace(
            _ROW, "</tns:value></tns:parameter><tns:parameter><tns:name>"
        )
        + "</tns:value></tns:parameter>"
    )
    if "" in parameters.values():  # xsdata writes an empty element short
        xml = xml.replace("<tns:value></tns:value>", "<tns:value/>")
    if "" in parameters:
        xml = xml.replace("<tns:name></tns:name>", "<tns:name/>")
    return xml


def investigation_xml(record: InvestigationRecord) -> bytes:
    """The `<tns:investigation>` document announcing that a beamline starts a proposal."""
    return "".join(
        (
            _DECLARATION,
            f'<tns:investigation xmlns:tns="{NAMESPACE}">',
            _element("experiment", "proposal", record.proposal.lower()),
            _element("instrument", "beamline", record.beamline.lower()),
            f"<tns:startDate>{_xsd_datetime(record.start)}</tns:startDate>",
            "</tns:investigation>",
        )
    ).encode("utf-8")


def _element(tag: str, what: str, text: str) -> str:
    unsafe = _XML_UNSAFE.search(text)
    if unsafe is not None:
        raise InvalidInput(
            f"{what} contains U+{ord(unsafe.group()):04X} at position {unsafe.start()}, "
            "a character an XML document cannot carry: remove it"
        )
    if not text:
        return f"<tns:{tag}/>"
    if _NEEDS_ESCAPE.search(text) is not None:
        text = _NEEDS_ESCAPE.sub(lambda match: _ESCAPES[match.group()], text)
    return f"<tns:{tag}>{text}</tns:{tag}>"


# --- the parameter dictionary pyicat-plus builds -------------------------------------


def _input_parameters(record: DatasetRecord, machine: str, software: str) -> dict[str, Any]:
    """The metadata dictionary as pyicat-plus's `_serialize_dict_metadata` completes it."""
    parameters: dict[str, Any] = {
        name: value for name, value in record.parameters.items() if value is not None
    }
    parameters["Sample_name"] = record.sample
    parameters["startDate"] = record.start
    parameters["endDate"] = record.end
    parameters["machine"] = machine
    parameters["software"] = software
    parameters["complete"] = record.complete
    _argument_wins(parameters, "datasetName", record.name, None)
    _argument_wins(parameters, "location", record.location, _normpath)
    _argument_wins(parameters, "proposal", record.proposal, str.lower)
    _argument_wins(parameters, "beamlineID", record.beamline, str.lower)
    input_datasets = parameters.get("input_datasets")
    if isinstance(input_datasets, str) and input_datasets:
        # pyicat-plus would iterate the characters; a Tango client means a list.
        input_datasets = [path for path in input_datasets.split(",") if path.strip()]
    if input_datasets:
        parameters["input_datasets"] = [_normpath(str(path)) for path in input_datasets]
    return parameters


def _argument_wins(
    parameters: dict[str, Any],
    key: str,
    argument: str,
    normalize: Callable[[str], str] | None,
) -> None:
    """A record field overrides a parameter of the same name; the key moves to the end."""
    value = parameters.pop(key, None)
    if argument:
        value = normalize(argument) if normalize else argument
    elif value is not None and normalize is not None:
        value = normalize(str(value))
    if value is not None:
        parameters[key] = value


def _normpath(path: str) -> str:
    """As pyicat-plus's `_normpath` for paths without a mount-point prefix."""
    return posixpath.normpath(path)


# --- parameter values as pyicat-plus's model renders them ----------------------------


def _rendered_parameters(parameters: Mapping[str, Any]) -> dict[str, str]:
    try:
        return _model_rendering(parameters)
    except _ModelRefused:
        return {name: _fallback(value) for name, value in parameters.items()}


_Accepted = dict[str, tuple[int, str, Any]]
"""ICAT name -> (its rank in the output, its text, the value it was made from)."""

_TECHNIQUE_NAMES = ("definition", "technique_pid", "technique_pid_esrfet_version")


def _model_rendering(parameters: Mapping[str, Any]) -> dict[str, str]:
    specs = parameter_specs()
    text_kind = ValueKind.TEXT
    renderers = _RENDERERS
    accepted: _Accepted = {}
    refused: list[tuple[str, Any]] = []
    unknown: list[tuple[str, Any]] = []
    for name in _TECHNIQUE_NAMES[:2]:
        given = parameters.get(name)
        if isinstance(given, list | tuple) and not all(isinstance(i, str) for i in given):
            # the definitions' validator lower-cases each item: pyicat-plus's whole model
            # fails on a number in the list, and it then sends every value as given
            raise _ModelRefused(name)
    for name, value in parameters.items():
        spec = specs.get(name)
        if spec is None:
            unknown.append((name, value))
        elif spec.kind is text_kind and value.__class__ is str:
            accepted[name] = (spec.rank, value, value)
        else:
            text = renderers[spec.kind](spec, value)
            if text is _INVALID:
                refused.append((name, value))
            elif text is not None:
                accepted[name] = (spec.rank, text, value)

    if not _renamed_names().isdisjoint(accepted):
        _apply_renames(accepted, specs)
    if not accepted.keys().isdisjoint(_TECHNIQUE_NAMES):
        _apply_techniques(accepted, specs)

    ranked = sorted((rank, name, text) for name, (rank, text, _) in accepted.items())
    result = {name: text for _, name, text in ranked}
    for name, value in refused:
        result[name] = _fallback(value)
    for name, value in unknown:
        result[name] = _fallback(value)
    return result


@cache
def _renamed_names() -> frozenset[str]:
    return frozenset(name for name, spec in parameter_specs().items() if spec.renamed_to)


def _apply_renames(accepted: _Accepted, specs: Mapping[str, ParameterSpec]) -> None:
    """A deprecated name's value moves to its successor unless that one is also given."""
    for name in _renamed_names().intersection(accepted):
        spec = specs[name]
        value = accepted[name][2]
        new_name = spec.renamed_to
        if new_name is None or new_name in accepted or new_name not in specs:
            continue
        new_spec = specs[new_name]
        if spec.meta is not None and new_spec.meta is not None:
            # A quantity moves with its unit: the successor may count in another one.
            new_text = _custom(new_spec, spec.meta._validate_with_valueerror(value))
        else:
            new_text = _render(new_spec, value)
        if new_text is _INVALID:
            # pyicat-plus's model fails as a whole: it sends every value as given.
            raise _ModelRefused(new_name)
        if new_text is None:
            continue
        del accepted[name]
        accepted[new_name] = (new_spec.rank, new_text, value)


def _apply_techniques(accepted: _Accepted, specs: Mapping[str, ParameterSpec]) -> None:
    """The definitions complete `definition`/`technique_pid` from the ESRF ontology."""
    esrfet = facility.esrfet()

    def items(name: str) -> list[str] | None:
        entry = accepted.get(name)
        if entry is None:
            return None
        return entry[1].split(" ") if entry[1] else []

    version_entry = accepted.get(_TECHNIQUE_NAMES[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown techniques are kept, as pyicat-plus does
        result = esrfet.validate_fields(
            items(_TECHNIQUE_NAMES[0]),
            items(_TECHNIQUE_NAMES[1]),
            version_entry[1] if version_entry else None,
        )
    for name, value in zip(_TECHNIQUE_NAMES, result, strict=True):
        if value is None:
            accepted.pop(name, None)
            continue
        text = value if isinstance(value, str) else " ".join(map(str, value))
        accepted[name] = (specs[name].rank, text, value)


def _render(spec: ParameterSpec, value: Any) -> Any:
    """The string pyicat-plus's model makes of `value`, `_INVALID`, or None (omitted)."""
    return _RENDERERS[spec.kind](spec, value)


def _render_text(spec: ParameterSpec, value: Any) -> Any:
    return value if isinstance(value, str) else _INVALID  # pydantic: no number -> str


def _render_float(spec: ParameterSpec, value: Any) -> Any:
    cls = value.__class__
    if cls is str:
        if _FLOAT_TEXT.fullmatch(value):
            return str(float(value))
    elif cls is float:
        return str(value)
    elif cls is int and -_EXACT_FLOAT < value < _EXACT_FLOAT:
        return str(float(value))
    return _exact(spec, value)


def _render_int(spec: ParameterSpec, value: Any) -> Any:
    cls = value.__class__
    if cls is str:
        if _INT_TEXT.fullmatch(value):
            return str(int(value))
    elif cls is int:
        return str(value)
    return _exact(spec, value)


def _render_bool(spec: ParameterSpec, value: Any) -> Any:
    if value.__class__ is bool:
        return "true" if value else "false"
    if value.__class__ is str and value in _BOOL_TEXT:
        return _BOOL_TEXT[value]
    return _exact(spec, value)


def _render_datetime(spec: ParameterSpec, value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return _json_datetime(value)
    return _exact(spec, value)


def _render_choice(spec: ParameterSpec, value: Any) -> Any:
    if value.__class__ is str and value in spec.choices:
        return value
    return _exact(spec, value)


def _render_quantity(spec: ParameterSpec, value: Any) -> Any:
    """A plain number is in the field's own unit; the rest goes to the definitions' parser.

    A text is read as icat-esrf-definitions reads it: Python's float() of its single
    token, kept an int when integral.
    """
    cls = value.__class__
    magnitude: int | float
    if cls is str:
        try:
            number = float(value)
        except ValueError:
            return _custom(spec, value)
        if number - number != 0:  # inf or nan: the definitions refuse them
            return _custom(spec, value)
        integer = int(number)
        magnitude = integer if number == integer else number
    elif cls is float:
        if value - value != 0:
            return _custom(spec, value)
        magnitude = value
    elif cls is int and -_EXACT_FLOAT < value < _EXACT_FLOAT:
        magnitude = value
    else:
        return _custom(spec, value)
    return str(float(magnitude)) if spec.quantity_float else str(magnitude)


def _custom(spec: ParameterSpec, value: Any) -> Any:
    """Lists and quantities: the definitions' own parser and ICAT serializer, no pydantic."""
    try:
        parsed = spec.meta._validate_with_valueerror(value)
    except ValueError:
        return _INVALID
    if parsed is None:
        return None
    try:
        return _icat_value(spec.meta._icat_serialize(parsed))
    except Exception as error:  # pydantic would fail the whole model: see _ModelRefused
        raise _ModelRefused(spec.name) from error


def _exact(spec: ParameterSpec, value: Any) -> Any:
    """Unusual spellings: let pydantic decide, exactly as pyicat-plus's model would."""
    from pydantic import ValidationError

    adapter = _adapter(spec.name)
    try:
        parsed = adapter.validate_python(value)
    except ValidationError:
        return _INVALID
    if parsed is None:
        return None
    mode = "icat" if spec.custom_serialization else "json"
    try:
        return _icat_value(adapter.dump_python(parsed, mode=mode))
    except Exception as error:
        raise _ModelRefused(spec.name) from error


_RENDERERS: dict[ValueKind, Callable[[ParameterSpec, Any], Any]] = {
    ValueKind.TEXT: _render_text,
    ValueKind.FLOAT: _render_float,
    ValueKind.INT: _render_int,
    ValueKind.BOOL: _render_bool,
    ValueKind.DATETIME: _render_datetime,
    ValueKind.CHOICE: _render_choice,
    ValueKind.QUANTITY: _render_quantity,
    ValueKind.CUSTOM: lambda spec, value: _custom(spec, value),
    ValueKind.CONSTRAINED: lambda spec, value: _exact(spec, value),
}


@cache
def _adapter(name: str) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(parameter_specs()[name].annotation)


def _icat_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fallback(value: Any, depth: int = 0) -> str:
    """pyicat-plus's naive rendering of a value its model refused or does not know."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Number):
        return str(value)
    if isinstance(value, datetime.datetime):
        return _xsd_datetime(value)
    if isinstance(value, Iterable):
        items = [item for item in value if item is not None]
        flat = all(isinstance(item, (str, bytes, Number)) for item in items)
        return ("," if flat else " ").join(_fallback(item, depth + 1) for item in items)
    return str(value)


# --- dates ---------------------------------------------------------------------------


def _offset_minutes(moment: datetime.datetime) -> int | None:
    offset = moment.utcoffset()
    if offset is None:
        return None
    seconds = int(offset.total_seconds())
    minutes = abs(seconds) // 60
    return minutes if seconds >= 0 else -minutes


def _format_offset(minutes: int | None) -> str:
    if minutes is None:
        return ""
    if minutes == 0:
        return "Z"
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


def _json_datetime(moment: datetime.datetime) -> str:
    """A datetime as pydantic's JSON mode writes it (the parameter values)."""
    text = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H:%M:%S}"
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + _format_offset(_offset_minutes(moment))


def _xsd_datetime(moment: datetime.datetime) -> str:
    """A datetime as xsdata's XmlDateTime writes it (startDate/endDate elements)."""
    text = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H:%M:%S}"
    micro = moment.microsecond
    if micro:
        text += f".{micro:06d}" if micro % 1000 else f".{micro // 1000:03d}"
    return text + _format_offset(_offset_minutes(moment))
