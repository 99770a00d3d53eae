"""Generate collector/tice_collector/openapi.yaml from the wire types: `python -m tice_collector.openapi`.

The committed file is checked by a test, so it cannot drift from the wire types (tice_wire), the
admin answers (routes/admin.py) and the report (report/model.py); schemathesis checks the running
collector against it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from tice_collector import __version__, serials
from tice_collector.report.model import UsageReport
from tice_collector.report.request import FORMATS, LANGS, MAX_DAYS
from tice_collector.routes.admin import MAX_LIMIT, MAX_OFFSET, DeviceList, Retired, Revoked, VerdictList
from tice_wire import DEVICE_KINDS, Batch, BatchResult, EnrollRequest, EnrollResult, Problem

PATH = Path(__file__).with_name("openapi.yaml")


def _report_parameters(*, default_format: str) -> list[dict[str, Any]]:
    """The evidence report's query parameters: the API answers JSON by default, the page HTML."""
    return [
        {"name": "from", "in": "query", "required": False,
         "description": f"first day (with to); the period spans at most {MAX_DAYS} days",
         "schema": {"type": "string", "format": "date"}},
        {"name": "to", "in": "query", "required": False,
         "description": "last day (with from), at the latest yesterday",
         "schema": {"type": "string", "format": "date"}},
        {"name": "school", "in": "query", "required": False,
         "description": "one school's sheet (UAI); default the whole city",
         "schema": {"type": "string", "pattern": "^[0-9]{7}[A-Za-z]$"}},
        {"name": "format", "in": "query", "required": False,
         "schema": {"type": "string", "enum": list(FORMATS), "default": default_format}},
        {"name": "lang", "in": "query", "required": False, "description": "language of the HTML page",
         "schema": {"type": "string", "enum": list(LANGS), "default": "fr"}},
    ]


def _problem(description: str, retry: bool = False, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    if retry:
        headers = {**(headers or {}), "Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                                      "description": "seconds to wait before retrying"}}
    if headers:
        answer["headers"] = headers
    return answer


def _escaped(pattern: str) -> str:
    """A character class written with \\uXXXX escapes, which every regex dialect reads alike."""
    return "".join(ch if 0x20 < ord(ch) < 0x7F else f"\\u{ord(ch):04x}" for ch in pattern)


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# Answers every body-reading endpoint can give at the door (collector/tice_collector/bodies.py).
_DOOR = {
    "408": _problem("the body did not arrive within body_timeout_s; the connection is closed (retry)"),
    "413": _problem("body over max_body_bytes after decompression; do not retry"),
    "415": _problem("not application/json, or a Content-Encoding other than gzip, deflate or identity "
                    "(unsupported_encoding; Accept-Encoding names the supported ones)",
                    headers={"Accept-Encoding": {
                        "schema": {"type": "string"},
                        "description": "the supported encodings (unsupported_encoding)"}}),
}
_ADMIN_COMMON = {
    "401": _problem("missing or wrong admin token"),
    "403": _problem("the admin API is disabled (admin_token is empty)"),
    "503": _problem("database unavailable", retry=True),
}
_DEVICE_ID = {"name": "device_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_STATUS = {"type": "object", "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
           "required": ["status"]}


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
    types = [Batch, BatchResult, EnrollRequest, EnrollResult, Problem, DeviceList, Revoked, Retired, UsageReport,
             VerdictList]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    (batch, batch_result, enroll, enroll_result, _problem_schema, device_list, revoked, retired,
     usage_report, verdict_list) = _normalised(schemas)
    components = _normalised(components)
    serial = components["EnrollRequest"]["properties"]["serial"]
    serial.update({
        "description": "stored trimmed and in upper case (` cb-001` and `CB-001` are one device); "
                       "it must hold a visible character, and no control character",
        "pattern": _escaped(f"[^{serials.BLANK}{serials.CONTROL}]"),
        "not": {"pattern": _escaped(f"[{serials.CONTROL}]")}})
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tice Telemetry collector API", "version": __version__,
                 "description": "Devices enrol once with their school's secret, then POST batches of records. "
                                "Integers may be written with a zero fraction (1172.0), as JSON Schema allows."},
        "components": {
            "schemas": components,
            "securitySchemes": {"deviceToken": {"type": "http", "scheme": "bearer"},
                                "adminToken": {"type": "http", "scheme": "bearer",
                                               "description": "the admin_token setting (TICE_ADMIN_TOKEN)"},
                                "reportToken": {"type": "http", "scheme": "bearer",
                                                "description": "the report_token setting (TICE_REPORT_TOKEN), "
                                                               "read-only: the report page alone"},
                                "reportPassword": {"type": "http", "scheme": "basic",
                                                   "description": "a browser's login: any user name, the report "
                                                                  "token or the admin token as the password"}},
        },
        "paths": {
            "/api/v1/enroll": {"post": {
                "summary": "Trade a school enrol secret for this device's bearer token (shown once)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": enroll}}},
                "responses": {
                    "201": _json("enrolled (a known serial keeps its device and first enrolment date; "
                                 "its previous token stops working)", enroll_result),
                    "400": _problem("malformed or invalid body (the detail names its path); do not retry"),
                    "401": _problem("unknown or revoked secret"),
                    "403": _problem("device belongs to another school (other_school), is retired, or the "
                                    "secret created its enroll_secret_max_devices devices (secret_exhausted)"),
                    **_DOOR,
                    "409": _problem("the serial is enrolled as another kind (kind_mismatch), or the same device "
                                    "enrols twice at once (enroll_race)"),
                    "429": _problem("too many attempts from this address or with this secret", retry=True),
                    "503": _problem("database unavailable", retry=True),
                }}},
            "/api/v1/reports": {"post": {
                "summary": "Deliver a batch of records (JSON, gzip allowed); answered after commit",
                "security": [{"deviceToken": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": batch}}},
                "responses": {
                    "200": _json("committed; counts of stored, duplicate and rejected records", batch_result),
                    "400": _problem("malformed JSON, corrupt encoding, invalid field, implausible record (an "
                                    "interval over 7,500 s, parts over their interval) or repeated key; the detail "
                                    "names the path; do not retry"),
                    "401": _problem("missing, unknown or revoked token; enrol again"),
                    "403": _problem("batch for another device, or device retired; do not retry"),
                    **_DOOR,
                    "429": _problem("per-device rate limit", retry=True),
                    "503": _problem("overloaded or database unavailable", retry=True),
                }}},
            "/api/v1/admin/devices": {"get": {
                "summary": "The device inventory, by school, kind and serial",
                "security": admin,
                "parameters": [
                    {"name": "school", "in": "query", "required": False, "description": "only this school (UAI)",
                     "schema": {"type": "string", "pattern": "^[0-9]{7}[A-Za-z]$"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT, "default": 1000}},
                    {"name": "offset", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
                ],
                "responses": {
                    "200": _json("devices", device_list),
                    "400": _problem("a query parameter is not what it should be"),
                    **_ADMIN_COMMON,
                }}},
            "/api/v1/admin/devices/{device_id}/revoke": {"post": {
                "summary": "Revoke the device's tokens: every collector refuses them from now on",
                "security": admin,
                "parameters": [_DEVICE_ID],
                "responses": {
                    "200": _json("revoked", revoked),
                    "400": _problem("the device id is not a UUID"),
                    "404": _problem("the device has no live token"),
                    **_ADMIN_COMMON,
                }}},
            "/api/v1/admin/devices/{device_id}/retire": {"post": {
                "summary": "Retire the device: its tokens stop working and it cannot enrol again",
                "security": admin,
                "parameters": [_DEVICE_ID],
                "responses": {
                    "200": _json("retired", retired),
                    "400": _problem("the device id is not a UUID"),
                    "404": _problem("no such device"),
                    **_ADMIN_COMMON,
                }}},
            "/api/v1/reports/usage": {"get": {
                "summary": "The evidence report: is the equipment used regularly? (docs/report.md)",
                "description": "Figures by school and kind of device, judged on each school's school days inside "
                               "teaching hours, from the daily totals. Without from and to: the current school "
                               "term up to yesterday (the last term during a break). The same report as "
                               "`tice-collector report`.",
                "security": admin,
                "parameters": _report_parameters(default_format="json"),
                "responses": {
                    "200": {"description": "the report: JSON (format=json), its rows as CSV (format=csv, columns "
                                           "in docs/report.md) or one self-contained HTML page (format=html)",
                            "content": {"application/json": {"schema": usage_report},
                                        "text/csv": {"schema": {"type": "string"}},
                                        "text/html": {"schema": {"type": "string"}}}},
                    "400": _problem("a bad parameter (invalid), an unknown school (unknown_school) or a period "
                                    "without a school day (empty_period); the detail says what to change"),
                    **_ADMIN_COMMON,
                }}},
            "/api/v1/admin/verdicts": {"get": {
                "summary": "Each device's verdict, days used of school days judged, last seen, and why it is not "
                           "judged yet (the cupboard: never_seen=true)",
                "security": admin,
                "parameters": [
                    {"name": "school", "in": "query", "required": False, "description": "only this school (UAI)",
                     "schema": {"type": "string", "pattern": "^[0-9]{7}[A-Za-z]$"}},
                    {"name": "kind", "in": "query", "required": False, "description": "only this kind of device",
                     "schema": {"type": "string", "enum": list(DEVICE_KINDS)}},
                    {"name": "never_seen", "in": "query", "required": False,
                     "description": "only active devices that never reported since their enrolment or import",
                     "schema": {"type": "string", "enum": ["true", "false", "1", "0"], "default": "false"}},
                ],
                "responses": {
                    "200": _json("devices with their verdicts", verdict_list),
                    "400": _problem("a query parameter is not what it should be"),
                    "404": _problem("no such school (unknown_school)"),
                    **_ADMIN_COMMON,
                }}},
            "/report": {"get": {
                "summary": "The evidence report page for a browser (HTML by default; docs/report.md)",
                "description": "The report of /api/v1/reports/usage, opened with the admin token or the "
                               "read-only report token; without one the answer asks the browser for a password.",
                "security": [{"adminToken": []}, {"reportToken": []}, {"reportPassword": []}],
                "parameters": _report_parameters(default_format="html"),
                "responses": {
                    "200": {"description": "the report: one self-contained HTML page (format=html), its rows as "
                                           "CSV (format=csv) or JSON (format=json)",
                            "content": {"text/html": {"schema": {"type": "string"}},
                                        "text/csv": {"schema": {"type": "string"}},
                                        "application/json": {"schema": usage_report}}},
                    "400": _problem("a bad parameter (invalid), an unknown school (unknown_school) or a period "
                                    "without a school day (empty_period); the detail says what to change"),
                    "401": _problem("missing or wrong token (a Basic challenge: the browser asks for it)"),
                    "403": _problem("the page is disabled (report_token and admin_token are both empty)"),
                    "503": _problem("database unavailable", retry=True),
                }}},
            "/healthz": {"get": {"summary": "process alive", "responses": {"200": _json("alive", _STATUS)}}},
            "/readyz": {"get": {"summary": "database reachable and migrations applied",
                                "responses": {"200": _json("ready", _STATUS),
                                              "503": _json("not ready; reason says why", _STATUS)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "metrics in the Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/api/v1/openapi.yaml": {"get": {"summary": "this document", "responses": {"200": {
                "description": "the OpenAPI document",
                "content": {"application/yaml": {"schema": {"type": "object"}}}}}}},
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
    header = ("# Generated from the wire types (tice_wire), the admin answers and the report by "
              "`python -m tice_collector.openapi`; do not edit.\n")
    return header + to_yaml(build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tice_collector.openapi",
        description=f"Write {PATH.name} from the wire types (wire/tice_wire/__init__.py).")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    fresh = render()
    if args.check:
        if PATH.read_text(encoding="utf-8") != fresh:
            print(f"{PATH} is stale: run python -m tice_collector.openapi", file=sys.stderr)
            return 1
        print(f"{PATH} is up to date")
        return 0
    PATH.write_text(fresh, encoding="utf-8")
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
