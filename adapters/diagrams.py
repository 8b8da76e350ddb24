"""Export every chart as Mermaid and SVG into diagrams/: `python -m adapters.diagrams`."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from statemachine.contrib.diagram import DotGraphMachine, MermaidGraphMachine

CHARTS = {
    "metadata_manager": "statecharts.metadata_manager:MetadataManagerChart",
    "meta_experiment": "statecharts.meta_experiment:MetaExperimentChart",
    "broker_link": "statecharts.broker_link:BrokerLink",
}
FOLDER = Path(__file__).resolve().parent.parent / "diagrams"


def chart_class(name: str) -> type:
    module, _, attribute = CHARTS[name].partition(":")
    chart: type = getattr(importlib.import_module(module), attribute)
    return chart


def mermaid(name: str) -> str:
    return str(MermaidGraphMachine(chart_class(name))()).rstrip() + "\n"


def svg(name: str) -> bytes:
    """Graphviz output without comments and object ids, so that it depends on the chart only."""
    rendered: bytes = DotGraphMachine(chart_class(name))().create_svg()
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
        (folder / f"{name}.svg").write_bytes(svg(name))
        written += [folder / f"{name}.mmd", folder / f"{name}.svg"]
    README.write_text(readme_with_chart(README.read_text()))
    return [*written, README]


def main() -> int:
    for path in export():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
