"""The committed diagrams are the charts as they are.

What the code generates is compared (Mermaid text, Graphviz source), not the SVG that
Graphviz renders from it: that one changes with the Graphviz version. A changed chart
needs `python -m icat_servers.adapters.diagrams`, which writes all three.
"""

from __future__ import annotations

import pytest

from icat_servers.adapters import diagrams


@pytest.mark.parametrize("name", sorted(diagrams.CHARTS))
def test_committed_mermaid_diagram_matches_its_chart(name: str) -> None:
    committed = (diagrams.FOLDER / f"{name}.mmd").read_text()
    assert committed == diagrams.mermaid(name), "run: python -m icat_servers.adapters.diagrams"


@pytest.mark.parametrize("name", sorted(diagrams.CHARTS))
def test_committed_graphviz_source_matches_its_chart(name: str) -> None:
    pytest.importorskip("pydot", reason="python-statemachine draws Graphviz through pydot")
    committed = (diagrams.FOLDER / f"{name}.dot").read_text()
    assert committed == diagrams.dot(name), "run: python -m icat_servers.adapters.diagrams"


@pytest.mark.parametrize("name", sorted(diagrams.CHARTS))
def test_committed_svg_is_there_for_every_chart(name: str) -> None:
    svg = (diagrams.FOLDER / f"{name}.svg").read_text()
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "</svg>" in svg


def test_readme_shows_the_metadata_manager_chart_as_it_is() -> None:
    readme = diagrams.README.read_text()
    assert readme == diagrams.readme_with_chart(readme), (
        "run: python -m icat_servers.adapters.diagrams"
    )
