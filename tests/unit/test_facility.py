"""icat-esrf-definitions' private modules: used in one place, checked at start-up."""

from __future__ import annotations

import pytest

from icat_servers.icatcore import facility


def test_the_installed_definitions_have_what_the_servers_use() -> None:
    assert facility.problem() == ""


def test_moved_internals_are_named_with_the_installed_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(facility._PRIVATE, "esrfet", "icat_esrf_definitions.models._gone")
    monkeypatch.setitem(facility._NAMES, "quantity", ("QuantityMeta", "NoSuchThing"))
    facility.problem.cache_clear()
    facility._module.cache_clear()
    try:
        problem = facility.problem()
    finally:
        facility.problem.cache_clear()
        facility._module.cache_clear()
    assert f"icat-esrf-definitions {facility.installed_version()}" in problem
    assert "icat_esrf_definitions.models._gone" in problem
    assert "quantity.NoSuchThing" in problem
    assert "install a version the project supports" in problem
