"""Small builders shared by the tests: schools, secrets, enrolment, batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from collector.auth import digest, new_secret
from collector.db.queries import q

SCHOOL = "0210001A"


async def add_school(conn: asyncpg.Connection, uai: str = SCHOOL, *, kind: str = "elementary") -> str:
    """Create a school (if needed) and a fresh enrol secret for it; return the secret."""
    if not await conn.fetchval(q("school_exists"), uai):
        await conn.execute(q("school_insert"), uai, f"École {uai}", "A", kind, "four_day")
    secret = new_secret()
    await conn.fetchval(q("secret_insert"), uai, digest(secret), "test")
    return secret


async def enroll(client: Any, secret: str, serial: str = "SN-0001", kind: str = "laptop") -> dict[str, Any]:
    resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": serial, "kind": kind})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def usage(seq: int, at: datetime, active: float = 30.0) -> dict[str, Any]:
    return {"type": "usage", "seq": seq, "at": at.isoformat(), "duration_s": 60.0, "active_s": active,
            "idle_s": 60.0 - active, "source": "x11"}


def batch(device_id: str, records: list[dict[str, Any]], *, spool: str | None = None,
          sent_at: datetime | None = None, dropped: int = 0) -> dict[str, Any]:
    return {"device_id": device_id, "spool": spool or str(uuid.uuid4()),
            "sent_at": (sent_at or datetime.now(UTC)).isoformat(), "records": records, "dropped": dropped}


def usage_batch(device_id: str, n: int, *, start_seq: int = 1, spool: str | None = None,
                now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    records = [usage(start_seq + i, now - timedelta(minutes=n - i)) for i in range(n)]
    return batch(device_id, records, spool=spool)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
