"""The metric contract (collector/tice_collector/metrics.csv), promtool's lint, and the generated OpenAPI file."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import add_school, auth, enroll, usage_batch
from tice_collector import openapi

ROOT = Path(__file__).resolve().parents[2]


def contract() -> dict[str, str]:
    with open(ROOT / "collector" / "tice_collector" / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert row["name"].startswith("tice_"), row
        assert row["help"], row
        assert (row["type"] == "counter") == row["name"].endswith("_total"), row
    return {r["name"]: r["type"] for r in rows}


def family_name(name: str, kind: str) -> str:
    return name[: -len("_total")] if kind == "counter" else name


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("CI"):
        pytest.fail("promtool is required in CI (apt-get install prometheus)")
    return found


async def scrape(client, db) -> str:
    dev = await enroll(client, await add_school(db))
    await client.post("/api/v1/reports", json=usage_batch(dev["device_id"], 3), headers=auth(dev["token"]))
    await client.post("/api/v1/reports", json={"bad": 1}, headers=auth(dev["token"]))
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return await resp.text()


async def test_every_exported_metric_is_declared_and_every_declared_one_exported(client, db):
    text = await scrape(client, db)
    declared = {family_name(n, t): t for n, t in contract().items()}
    exported = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert set(exported) == set(declared), (set(exported) ^ set(declared))
    for name, kind in exported.items():
        assert declared[name] == kind, name


async def test_scrape_passes_promtool_check_metrics(client, db):
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    text = await scrape(client, db)
    result = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_openapi_matches_the_wire_types():
    assert openapi.PATH.read_text(encoding="utf-8") == openapi.render(), (
        "collector/tice_collector/openapi.yaml is stale: run python -m tice_collector.openapi")


async def test_openapi_is_served_and_is_valid_yaml(client):
    resp = await client.get("/api/v1/openapi.yaml")
    assert resp.status == 200
    spec = yaml.safe_load(await resp.text())
    assert spec["openapi"].startswith("3.1")
    assert "/api/v1/reports" in spec["paths"]
    assert set(spec["components"]["schemas"]) >= {"Batch", "Usage", "Health", "Link", "Modem", "Problem"}
    # Every answer the enrol endpoint gives, and the admin endpoints (schemathesis checks the rest).
    assert set(spec["paths"]["/api/v1/enroll"]["post"]["responses"]) == {
        "201", "400", "401", "403", "408", "409", "413", "415", "429", "503"}
    assert {"/api/v1/admin/devices", "/api/v1/admin/devices/{device_id}/revoke",
            "/api/v1/admin/devices/{device_id}/retire"} <= set(spec["paths"])
