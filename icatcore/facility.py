"""The one module that reaches into icat-esrf-definitions' private modules.

The facility's parameter names and how pyicat-plus renders their values live in the
package's `_base` modules, which it does not promise to keep. Everything that uses them
comes through here, and `problem()` says in words when the installed version moved them,
so that a device can refuse to start (FAULT) instead of sending documents ICAT would not
read as pyicat-plus's.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

DISTRIBUTION = "icat-esrf-definitions"
_PRIVATE = {
    "annotations": "icat_esrf_definitions.models._base.fields.annotations",
    "icat_fields": "icat_esrf_definitions.models._base.fields.icat",
    "model": "icat_esrf_definitions.models._base.model",
    "custom_types": "icat_esrf_definitions.models._base.custom_types.metadata.base",
    "quantity": "icat_esrf_definitions.models._base.custom_types.metadata.quantity",
    "esrfet": "icat_esrf_definitions.models._base.esrfet",
}
_NAMES = {
    "annotations": ("has_custom_serialization", "get_field_type", "get_field_metadata"),
    "icat_fields": ("is_icat_field", "get_short_icat_name", "full_icat_group_name"),
    "model": ("IcatNexusBaseModel",),
    "custom_types": ("CustomTypeMetadata",),
    "quantity": ("QuantityMeta",),
    "esrfet": ("validate_fields",),
}


def installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "not installed"


@cache
def _module(key: str) -> ModuleType:
    return import_module(_PRIVATE[key])


@cache
def problem() -> str:
    """ "" when everything this project uses is where it expects it; else what moved."""
    missing = []
    try:
        model()
    except (ImportError, AttributeError):
        missing.append("icat_esrf_definitions.models.IcatDatasetParameters")
    for key, names in _NAMES.items():
        try:
            module = _module(key)
        except ImportError:
            missing.append(_PRIVATE[key])
            continue
        missing.extend(f"{_PRIVATE[key]}.{name}" for name in names if not hasattr(module, name))
    if not missing:
        return ""
    return (
        f"{DISTRIBUTION} {installed_version()} does not have what these servers use "
        f"({', '.join(missing)}): install a version the project supports (see README)"
    )


@cache
def model() -> Any:
    """The facility's dataset parameters model."""
    from icat_esrf_definitions.models import IcatDatasetParameters

    return IcatDatasetParameters


def field_annotations() -> Any:
    return _module("annotations")


def icat_fields() -> Any:
    return _module("icat_fields")


def base_model() -> Any:
    return _module("model").IcatNexusBaseModel


def custom_type_metadata() -> Any:
    return _module("custom_types").CustomTypeMetadata


def quantity_meta() -> Any:
    return _module("quantity").QuantityMeta


def esrfet() -> Any:
    return _module("esrfet")
