"""Devices whose identity two agents share, and how the collector tells.

Laptops cloned from one disk image can end up as one device: the same serial (an agent older
than the install-id rule used /etc/machine-id, identical on every clone), or the very same
credentials (the image was taken after enrolment). Each such agent's data lands on the other's
device, and each enrolment revokes the other's token. Two signs, both kept in
`device_identity_conflicts`, warned about in the log (naming the device and its serial, at
most once an hour per device) and counted on /metrics as `tice_devices_shared_identity`:

- at ingest, a report made with a token that a later enrolment of the same device replaced,
  more than `shared_identity_grace_s` after it was replaced: the agent that re-enrolled reads
  its new token before its next send, so an agent still presenting the old one is another
  agent (`earlier_enrolment_uses`). Only the rare 401 path pays for the lookup;
- in the `identity` job, two spools of one device reporting in the same period: the older
  spool still reports more than `shared_identity_grace_s` after the newer one first did
  (`spools_at_once`). A spool that replaced another (a reinstall, a corrupt spool moved aside)
  stops before the new one starts.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg

from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.queries import q
from tice_collector.jobspec import JobContext, JobSpec

log = logging.getLogger("tice.identity")

# Devices seen shared within this window count on /metrics.
RECENT = timedelta(days=7)
# Spools that reported within this window are compared.
SPOOL_WINDOW = timedelta(days=1)


def warn(device_id: uuid.UUID, serial: str, why: str) -> None:
    log.warning("device %s (serial %r) is used by two agents at once: %s. Cloned disk images or a shared "
                "serial: enrol each machine again with its own serial (tice-agent enroll; see docs/agent.md)",
                device_id, serial, why)


async def note_stale_token(conn: asyncpg.Connection | asyncpg.Pool, digest: bytes, grace_s: float,
                           db_timeout_s: float) -> None:
    """Called when a bearer token is not live: count it if a later enrolment replaced it.

    Best effort: the request is answered 401 whatever happens here.
    """
    try:
        row = await conn.fetchrow(q("token_superseded"), digest, grace_s, timeout=db_timeout_s)
        if row is None:
            return
        warn_now = await conn.fetchval(q("identity_conflict_note"), row["device_id"], 1, 0, timeout=db_timeout_s)
    except DB_ERRORS as e:
        log.debug("could not check a rejected token: %s", e)
        return
    if warn_now:
        warn(row["device_id"], row["serial"], "a token replaced by a later enrolment of this device is still in use")


async def detect(conn: asyncpg.Connection, ctx: JobContext) -> str:
    """The `identity` job: devices with two spools reporting at once."""
    now = datetime.now(UTC)
    rows = await conn.fetch(q("spools_at_once"), now - SPOOL_WINDOW, ctx.settings.shared_identity_grace_s)
    spools: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    serials = {}
    for r in rows:
        spools[r["device_id"]] |= {r["older"], r["newer"]}
        serials[r["device_id"]] = r["serial"]
    for device_id, seen in spools.items():
        if await conn.fetchval(q("identity_conflict_note"), device_id, 0, len(seen)):
            warn(device_id, serials[device_id], f"{len(seen)} spools report for it in the same period")
    return f"{len(spools)} devices with spools reporting at once"


async def recent(conn: asyncpg.Connection) -> set[uuid.UUID]:
    """Devices seen in use by two agents within RECENT (for the fleet snapshot)."""
    return {r["device_id"] for r in await conn.fetch(q("identity_conflicts_recent"), datetime.now(UTC) - RECENT)}


IDENTITY = JobSpec("identity", detect, lambda s: s.snapshot_interval_s,
                   "find devices whose identity two agents share (cloned disk images, shared serials)", lock_key=4)
