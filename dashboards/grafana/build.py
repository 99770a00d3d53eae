"""Render the dashboards to dashboards/grafana/dashboards/*.json (what Grafana's provisioning loads).

    python -m dashboards.grafana.build            # write the JSON files
    python -m dashboards.grafana.build --check    # exit 1 if a committed file is stale

A new dashboard is a module with a `dashboard()` builder and a `UID`, plus one line in DASHBOARDS.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from dashboards.grafana import city, collector_health, connectivity, equipment, school

OUT = Path(__file__).resolve().parent / "dashboards"
# File name (without .json) -> builder.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "city-overview": city.dashboard,
    "school": school.dashboard,
    "connectivity": connectivity.dashboard,
    "projectors-disks": equipment.dashboard,
    "collector-health": collector_health.dashboard,
}


def finish(board: model.Dashboard) -> model.Dashboard:
    """Number the panels (stable ids for links and for Grafana's own bookkeeping) and give each
    panel its targets' datasource, so an empty panel still names the variable it reads."""
    next_id = 1
    for panel in board.panels or []:
        panel.id_val = next_id
        next_id += 1
        if isinstance(panel, model.Panel) and panel.targets:
            refs = {json.dumps(t.datasource.to_json(), sort_keys=True) for t in panel.targets}  # type: ignore[attr-defined]
            if len(refs) == 1:
                panel.datasource = panel.targets[0].datasource  # type: ignore[attr-defined]
    return board


def render(name: str) -> str:
    board = finish(DASHBOARDS[name]().build())
    return JSONEncoder(sort_keys=True, indent=2).encode(board) + "\n"


def as_dict(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(render(name))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.grafana.build", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path = OUT / f"{name}.json"
        text = render(name)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("stale: " + ", ".join(stale) + "; run: python -m dashboards.grafana.build", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
