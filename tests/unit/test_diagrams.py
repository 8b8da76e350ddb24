"""The committed diagrams are the charts as they are.

A changed chart needs `python -m adapters.diagrams`.
"""

from __future__ import annotations

import pytest

from adapters import diagrams


@pytest.mark.parametrize("name", sorted(diagrams.CHARTS))
def test_committed_mermaid_diagram_matches_its_chart(name: str) -> None:
    committed = (diagrams.FOLDER / f"{name}.mmd").read_text()
    assert committed == diagrams.mermaid(name), "run: python -m adapters.diagrams"


@pytest.mark.parametrize("name", sorted(diagrams.CHARTS))
def test_committed_svg_diagram_matches_its_chart(name: str) -> None:
    committed = (diagrams.FOLDER / f"{name}.svg").read_bytes()
    assert committed == diagrams.svg(name), "run: python -m adapters.diagrams"


def test_readme_shows_the_metadata_manager_chart_as_it_is() -> None:
    readme = diagrams.README.read_text()
    assert readme == diagrams.readme_with_chart(readme), "run: python -m adapters.diagrams"
