"""Export every chart into diagrams/: `python -m icat_servers.adapters.diagrams`.

Per chart: Mermaid text (`.mmd`, generated here, no dependency), Graphviz source (`.dot`,
python-statemachine's `DotGraphMachine`, needs pydot) and the SVG Graphviz renders from it
(`.svg`, needs the `dot` program). The test compares the Mermaid and DOT text with the
charts; the SVG depends on the Graphviz version, so it is regenerated, not compared.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

CHARTS = {
    "metadata_manager": "icat_servers.statecharts.metadata_manager:MetadataManagerChart",
    "meta_experiment": "icat_servers.statecharts.meta_experiment:MetaExperimentChart",
    "broker_link": "icat_servers.statecharts.broker_link:BrokerLink",
}
FOLDER = Path(__file__).resolve().parent.parent / "diagrams"


def chart_class(name: str) -> Any:
    """The chart's class: its states and transitions are class attributes."""
    module, _, attribute = CHARTS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def mermaid(name: str) -> str:
    """The chart as a Mermaid state diagram (python-statemachine 2 draws only Graphviz).

    A transition to another state is an arrow labelled with its event and guards; an
    internal transition that runs an action is a line inside its state.
    """
    chart = chart_class(name)
    lines = ["stateDiagram-v2", "    direction LR"]
    arrows = [f"    [*] --> {chart.initial_state.id}"]
    for state in chart.states:
        lines.append(f'    state "{state.name}" as {state.id}')
        for transition in state.transitions:
            guards = ", ".join(str(cond) for cond in transition.cond)
            label = transition.event + (f" [{guards}]" if guards else "")
            actions = [
                str(spec) for spec in (*transition.before, *transition.on) if not spec.is_convention
            ]
            if callable(getattr(chart, f"on_{transition.event}", None)):
                actions.append(f"on_{transition.event}")
            described = label + (f" / {', '.join(actions)}" if actions else "")
            if not transition.internal:
                arrows.append(f"    {state.id} --> {transition.target.id} : {described}")
            elif actions:
                lines.append(f"    {state.id} : {described}")
    return "\n".join([*lines, *arrows]) + "\n"


def _graph(name: str) -> Any:
    """python-statemachine's pydot graph of the chart (imports pydot only when called)."""
    from statemachine.contrib.diagram import DotGraphMachine

    return DotGraphMachine(chart_class(name))()


def dot(name: str) -> str:
    """The chart as Graphviz source, as python-statemachine draws it."""
    source: str = _graph(name).to_string()
    return source if source.endswith("\n") else source + "\n"


def svg(name: str) -> bytes:
    """The chart rendered by Graphviz, without its version comments and object ids."""
    rendered: bytes = _graph(name).create_svg()
    text = re.sub(r"_\d{6,}", "", rendered.decode())
    lines = text.splitlines()
    return ("\n".join(line for line in lines if not line.startswith("<!--")) + "\n").encode()


README = FOLDER.parent / "README.md"
README_CHART = "metadata_manager"


def readme_with_chart(readme: str) -> str:
    """The README with its Mermaid block replaced by the MetadataManager chart as it is."""
    start = readme.index("```mermaid\n") + len("```mermaid\n")
    end = readme.index("```", start)
    return readme[:start] + mermaid(README_CHART) + readme[end:]


def export(folder: Path = FOLDER) -> list[Path]:
    written = []
    for name in CHARTS:
        (folder / f"{name}.mmd").write_text(mermaid(name))
        (folder / f"{name}.dot").write_text(dot(name))
        (folder / f"{name}.svg").write_bytes(svg(name))
        written += [folder / f"{name}.{kind}" for kind in ("mmd", "dot", "svg")]
    README.write_text(readme_with_chart(README.read_text()))
    return [*written, README]


def main() -> int:
    for path in export():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
