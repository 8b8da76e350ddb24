"""The package as pip sees it: ranges whose floors CI tests, one import name.

The wheel itself is built, installed in a clean venv and run by .ci/run.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OLDEST = {
    name.lower(): version
    for name, version in re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / ".ci" / "oldest.txt").read_text(), re.MULTILINE
    )
}


def _requirements() -> dict[str, str]:
    project = PROJECT["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["test"]
    found = {}
    for line in listed:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups()  # type: ignore[union-attr]
        found[name.lower()] = spec
    return found


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_no_dependency_is_pinned_to_one_version() -> None:
    pinned = {name: spec for name, spec in _requirements().items() if "==" in spec}
    assert pinned == {}, "pins force their version on BLISS and MXCuBE environments"


def test_the_oldest_venv_installs_each_floor_of_the_ranges() -> None:
    for name, spec in _requirements().items():
        floor = re.search(r">=\s*([0-9.]+)", spec)
        if name not in OLDEST or floor is None:
            continue
        tested = _release(OLDEST[name])
        assert tested[: len(_release(floor[1]))] == _release(floor[1]), (
            f"{name}: pyproject's floor {floor[1]}, .ci/oldest.txt tests {OLDEST[name]}"
        )


def test_the_one_import_name_holds_the_designs_folders() -> None:
    for folder in ("statecharts", "adapters", "icatcore", "examples"):
        link = ROOT / "icat_servers" / folder
        assert link.is_symlink() and link.resolve() == ROOT / folder
    assert PROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == [
        "icat_servers",
        "icat_servers.*",
    ]
