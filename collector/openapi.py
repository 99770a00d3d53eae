"""Generate collector/openapi.yaml from the wire types: `python -m collector.openapi`.

The committed file is checked by a test, so it cannot drift from collector/wire.py.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from collector import __version__
from collector.wire import Batch, BatchResult, EnrollRequest, EnrollResult, Problem

PATH = Path(__file__).with_name("openapi.yaml")


def _problem(description: str, retry: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    if retry:
        answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
    return answer


def _normalised(value: Any) -> Any:
    """Descriptions cleaned the same way on every msgspec version.

    msgspec copies docstrings into the schema, and its versions differ in how they strip the
    indentation (0.23 keeps what 0.22 removed): `inspect.cleandoc` makes the output independent.
    """
    if isinstance(value, dict):
        return {k: (inspect.cleandoc(v) if k in ("description", "title") and isinstance(v, str) else _normalised(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def build() -> dict[str, Any]:
    (batch, batch_result, enroll, enroll_result, _problem_schema), components = msgspec.json.schema_components(
        [Batch, BatchResult, EnrollRequest, EnrollResult, Problem], ref_template="#/components/schemas/{name}")
    batch, batch_result, enroll, enroll_result, components = _normalised(
        [batch, batch_result, enroll, enroll_result, components])
    json_body = {"application/json": {"schema": batch}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tice Telemetry collector API", "version": __version__,
                 "description": "Devices enrol once with their school's secret, then POST batches of records."},
        "components": {
            "schemas": components,
            "securitySchemes": {"deviceToken": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/enroll": {"post": {
                "summary": "Trade a school enrol secret for this device's bearer token (shown once)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": enroll}}},
                "responses": {
                    "201": {"description": "enrolled", "content": {"application/json": {"schema": enroll_result}}},
                    "400": _problem("malformed or invalid body"),
                    "401": _problem("unknown or revoked secret"),
                    "403": _problem("device belongs to another school, or is retired"),
                    "503": _problem("database unavailable", retry=True),
                }}},
            "/api/v1/reports": {"post": {
                "summary": "Deliver a batch of records (JSON, gzip allowed); answered after commit",
                "security": [{"deviceToken": []}],
                "requestBody": {"required": True, "content": json_body},
                "responses": {
                    "200": {"description": "committed; counts of stored, duplicate and rejected records",
                            "content": {"application/json": {"schema": batch_result}}},
                    "400": _problem("malformed JSON, invalid field, implausible record (an interval over 7,500 s, "
                                    "parts over their interval) or repeated key; the detail names the path; "
                                    "do not retry"),
                    "401": _problem("missing, unknown or revoked token; enrol again"),
                    "403": _problem("batch for another device, or device retired; do not retry"),
                    "413": _problem("body over the limit after decompression; do not retry"),
                    "415": _problem("not application/json"),
                    "429": _problem("per-device rate limit", retry=True),
                    "503": _problem("overloaded or database unavailable", retry=True),
                }}},
            "/healthz": {"get": {"summary": "process alive", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "database reachable and migrations applied",
                                "responses": {"200": {"description": "ready"},
                                              "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics"}}}},
        },
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML writer: block style, every string double-quoted (JSON-compatible)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for k, v in value.items():
            key = json.dumps(str(k))
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{key}:\n{to_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{key}: {to_yaml(v, 0)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        lines = []
        for item in value:
            if isinstance(item, dict | list) and item:
                body = to_yaml(item, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {to_yaml(item, 0)}")
        return "\n".join(lines)
    return json.dumps(value, ensure_ascii=False)


def render() -> str:
    header = "# Generated from collector/wire.py by `python -m collector.openapi`; do not edit.\n"
    return header + to_yaml(build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m collector.openapi",
        description=f"Write {PATH.name} from the wire types (collector/wire.py).")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    fresh = render()
    if args.check:
        if PATH.read_text(encoding="utf-8") != fresh:
            print(f"{PATH} is stale: run python -m collector.openapi", file=sys.stderr)
            return 1
        print(f"{PATH} is up to date")
        return 0
    PATH.write_text(fresh, encoding="utf-8")
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
