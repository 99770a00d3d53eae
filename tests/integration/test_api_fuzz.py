"""schemathesis against a real collector over loopback: no 5xx, and every answer as the
served OpenAPI document (collector/tice_collector/openapi.yaml) says.

Each operation runs with the token it is meant for: the device's on /api/v1/reports, the admin
token on /api/v1/admin/* and the usage report; valid (positive) and invalid (negative) requests both. Half the
generated batches name the enrolled device and half the enrolments carry the real secret, so
they reach the validation, the clock correction and the writer instead of stopping at 401/403.
A fixed seed and a bounded number of examples (TICE_TEST_FUZZ_EXAMPLES, default 20 per
operation and mode) keep the run repeatable and about a minute long.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from tests import pg
from tests.helpers import CollectorProcess, add_school
from tice_collector import openapi
from tice_wire import AnyRecord, integral_floats_as_ints

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

ADMIN_TOKEN = "tice-admin-fuzz-token"
EXAMPLES = int(os.environ.get("TICE_TEST_FUZZ_EXAMPLES", "20"))


@dataclass
class Served:
    url: str
    secret: str
    device_id: str
    device_token: str


async def _prepare(url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return await add_school(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def served(pg_admin_url: str, pg_template: str) -> Iterator[Served]:
    name = asyncio.run(pg.create_database(pg_admin_url, template=pg_template))
    url = pg.with_database(pg_admin_url, name)
    secret = asyncio.run(_prepare(url))
    collector = CollectorProcess(env={
        "TICE_DATABASE_URL": url, "TICE_ADMIN_TOKEN": ADMIN_TOKEN, "TICE_JOBS_ENABLED": "false",
        # The fuzzer is one client sending as fast as it can: let the limits through, so
        # answers other than 429 are exercised (429 itself is in the document).
        "TICE_RATE_LIMIT_PER_MINUTE": "1000000", "TICE_RATE_LIMIT_BURST": "1000000",
        "TICE_ENROLL_PER_ADDRESS_PER_MINUTE": "1000000", "TICE_ENROLL_PER_ADDRESS_BURST": "1000000",
        "TICE_LOG_LEVEL": "warning"})
    try:
        asyncio.run(collector.wait_ready())
        request = urllib.request.Request(
            collector.url + "/api/v1/enroll", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"secret": secret, "serial": "FUZZ-1", "kind": "laptop"}).encode())
        with urllib.request.urlopen(request, timeout=60) as resp:
            device = json.load(resp)
        yield Served(collector.url, secret, device["device_id"], device["token"])
    finally:
        _, err = collector.stop()
        asyncio.run(pg.drop_database(pg_admin_url, name))
    assert "Traceback" not in err and "unhandled error" not in err, err[-3000:]


@pytest.fixture(scope="module")
def api(served: Served) -> Any:
    return schemathesis.openapi.from_url(served.url + "/api/v1/openapi.yaml")


# The operations of the generated document (the collector serves the same file).
OPERATIONS = [(method.upper(), path) for path, ops in openapi.build()["paths"].items() for method in ops]
HAS_INPUT = {(method.upper(), path) for path, ops in openapi.build()["paths"].items() for method, op in ops.items()
             if op.get("parameters") or op.get("requestBody")}


# Operations that a generated request can pass all the way (the others answer 404 to an
# unknown device id, which the document says).
CAN_SUCCEED = {("POST", "/api/v1/enroll"), ("POST", "/api/v1/reports"), ("GET", "/api/v1/admin/devices"),
               ("GET", "/api/v1/reports/usage"), ("GET", "/api/v1/admin/verdicts"), ("GET", "/report"),
               ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/api/v1/openapi.yaml")}


# Operations outside /api/v1/admin/ that the admin token opens.
ADMIN_PATHS = {"/api/v1/reports/usage", "/report"}
# Operations whose schema-valid requests may still be refused with a 400 the document names:
# the report's dates must come in order and be over, its school must exist, its period must
# hold a school day, none of which a schema can say. Schemathesis's positive-data check is off
# for them; instead each such 400 must be one of those refusals (below).
_REPORT_400 = (("unknown_school", "empty_period"), ("the period ", "from: ", "to: ", "give both from and to"))
SEMANTIC_400 = {("GET", "/api/v1/reports/usage"): _REPORT_400, ("GET", "/report"): _REPORT_400}

_records = msgspec.json.Decoder(list[AnyRecord])


def plausible_only(records: list[Any]) -> list[Any]:
    """The records a positive case may carry: those the plausibility rules accept.

    JSON Schema cannot say "the parts of an interval add up to at most its duration", so a
    schema-valid record can still be implausible (400, docs/ingest.md); tests/integration/
    test_plausible.py covers those refusals. Records the wire types cannot decode stay as
    generated, for the server to judge."""
    kept = []
    for record in records:
        raw = json.dumps([record]).encode()
        try:
            # As the collector reads it: an integral float (`1172.0`) stands for an integer.
            [decoded] = _records.decode(integral_floats_as_ints(raw) or raw)
        except (msgspec.DecodeError, ValueError, TypeError):
            kept.append(record)
            continue
        if decoded.implausible() is None:
            kept.append(record)
    return kept


def _heads(case: Any) -> bool:
    return zlib.crc32(repr(case.body).encode() + repr(case.query).encode()) % 2 == 0


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_answer_matches_the_document(api: Any, served: Served, method: str, path: str,
                                           mode: GenerationMode) -> None:
    if mode is GenerationMode.NEGATIVE and (method, path) not in HAS_INPUT:
        pytest.skip("nothing to make invalid: the operation takes no input")
    token = ADMIN_TOKEN if path.startswith("/api/v1/admin/") or path in ADMIN_PATHS else served.device_token
    statuses: Counter[int] = Counter()

    @seed(20261130)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate])
    @given(case=api[path][method].as_strategy(mode))
    def check(case: Any) -> None:
        # A generated Authorization header becomes the real token; a request the generator
        # left without one (a negative case) goes without, and must get its 401.
        headers = case.headers or {}
        for name in [n for n in headers if n.lower() == "authorization"]:
            headers[name] = f"Bearer {token}"
        body = case.body
        if (mode is GenerationMode.POSITIVE and path == "/api/v1/reports" and isinstance(body, dict)
                and isinstance(body.get("records"), list)):
            body["records"] = plausible_only(body["records"])
        if mode is GenerationMode.POSITIVE and isinstance(body, dict) and _heads(case):
            # Half the requests carry what only a real client knows, to get past 401/403.
            if path == "/api/v1/reports" and "device_id" in body:
                body["device_id"] = served.device_id
            if path == "/api/v1/enroll" and "secret" in body:
                body["secret"] = served.secret
        semantic = SEMANTIC_400.get((method, path))
        response = case.call_and_validate(timeout=60, excluded_checks=[positive_data_acceptance] if semantic else None)
        statuses[response.status_code] += 1
        if semantic and mode is GenerationMode.POSITIVE and response.status_code == 400:
            problem = response.json()
            codes, details = semantic
            assert problem["error"] in codes or problem["detail"].startswith(details), problem

    check()
    assert not [s for s in statuses if s >= 500], statuses
    if mode is GenerationMode.POSITIVE and (method, path) in CAN_SUCCEED:
        assert any(200 <= s < 300 for s in statuses), f"no request got through: {dict(statuses)}"
