"""Fixtures for registration against the session's real Tango database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tango

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "id00.yml"
CLASSES = ("MetaExperiment", "MetadataManager")
BUILTIN_SERVERS = ("DataBaseds/2", "TangoAccessControl/1", "TangoTest/test")


def snapshot(db: Any) -> dict[str, Any]:
    """Everything registration could touch: servers, devices, class and device properties."""
    servers = sorted(s for s in db.get_server_list("*") if s not in BUILTIN_SERVERS)
    devices: dict[str, list[str]] = {}
    device_properties: dict[str, dict[str, list[str]]] = {}
    for server in servers:
        pairs = list(db.get_device_class_list(server))
        devices[server] = pairs
        for name in pairs[0::2]:
            names = list(db.get_device_property_list(name, "*"))
            values = db.get_device_property(name, names) if names else {}
            device_properties[name] = {k: list(v) for k, v in values.items()}
    class_properties: dict[str, dict[str, list[str]]] = {}
    for cls in CLASSES:
        names = list(db.get_class_property_list(cls))
        values = db.get_class_property(cls, names) if names else {}
        class_properties[cls] = {k: list(v) for k, v in values.items()}
    return {
        "devices": devices,
        "device_properties": device_properties,
        "class_properties": class_properties,
    }


@pytest.fixture
def db(tango_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Database client of the session database, with TANGO_HOST set to it, emptied of
    every ICAT server and class property so each test starts from nothing."""
    monkeypatch.setenv("TANGO_HOST", tango_db)
    host, port = tango_db.split(":")
    database = tango.Database(host, int(port))
    for server in database.get_server_list("*"):
        if server not in BUILTIN_SERVERS:
            database.delete_server(server)
    for cls in CLASSES:
        names = list(database.get_class_property_list(cls))
        if names:
            database.delete_class_property(cls, names)
    assert snapshot(database) == {
        "devices": {},
        "device_properties": {},
        "class_properties": {"MetaExperiment": {}, "MetadataManager": {}},
    }
    yield PlainLists(database)


class PlainLists:
    """A Database whose property reads answer plain lists, as the tests compare them:
    pytango before 10.3 answers StdStringVector values, which equal no list."""

    def __init__(self, database: Any) -> None:
        self._database = database

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)

    def get_class_property(self, name: str, props: Any) -> dict[str, list[str]]:
        found = self._database.get_class_property(name, props)
        return {key: list(values) for key, values in found.items()}

    def get_device_property(self, name: str, props: Any) -> dict[str, list[str]]:
        found = self._database.get_device_property(name, props)
        return {key: list(values) for key, values in found.items()}
