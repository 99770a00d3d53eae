"""Devices whose identity two agents share: a token replaced by a later enrolment still in use,
two spools reporting at once; a warning naming the device, and tice_devices_shared_identity.
The legitimate cases stay quiet: a re-enrolment on the same machine, a token an admin revoked,
a spool that replaced another."""

from __future__ import annotations

import logging
import uuid

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import SCHOOL, add_school, auth, enroll, usage_batch
from tice_collector.app import create_app
from tice_collector.identity import IDENTITY
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.keys import METRICS, POOL, SETTINGS


async def conflicts(db) -> dict[uuid.UUID, tuple[int, int]]:
    rows = await db.fetch("SELECT device_id, earlier_enrolment_uses, spools_at_once FROM device_identity_conflicts")
    return {r["device_id"]: (r["earlier_enrolment_uses"], r["spools_at_once"]) for r in rows}


async def report(client, dev: dict, token: str, *, spool: str, seq: int) -> int:
    resp = await client.post("/api/v1/reports", json=usage_batch(dev["device_id"], 1, start_seq=seq, spool=spool),
                             headers=auth(token))
    return resp.status


async def shared_metric(client) -> dict[tuple[str, str], float]:
    text = await (await client.get("/metrics")).text()
    return {(s.labels["school"], s.labels["kind"]): s.value
            for fam in text_string_to_metric_families(text) if fam.name == "tice_devices_shared_identity"
            for s in fam.samples}


async def test_a_replaced_token_still_in_use_is_two_agents(aiohttp_client, make_settings, db, caplog):
    client = await aiohttp_client(create_app(make_settings(shared_identity_grace_s=0)))
    secret = await add_school(db)
    first = await enroll(client, secret, serial="CLONED-IMAGE-1")   # laptop A
    second = await enroll(client, secret, serial="CLONED-IMAGE-1")  # laptop B, same serial: A's token revoked
    device = uuid.UUID(first["device_id"])
    with caplog.at_level(logging.WARNING, logger="tice.identity"):
        for seq in (1, 2, 3):  # A keeps trying with the token B's enrolment replaced
            assert await report(client, first, first["token"], spool=str(uuid.uuid4()), seq=seq) == 401
    assert await report(client, second, second["token"], spool=str(uuid.uuid4()), seq=1) == 200
    assert await conflicts(db) == {device: (3, 0)}
    # One warning naming the device and its serial, not one per request.
    warnings = [r.getMessage() for r in caplog.records if r.name == "tice.identity"]
    assert len(warnings) == 1
    assert str(device) in warnings[0] and "'CLONED-IMAGE-1'" in warnings[0] and "still in use" in warnings[0]


async def test_legitimate_token_changes_are_not_two_agents(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(shared_identity_grace_s=0)))
    secret = await add_school(db)
    # Re-enrolled on the same machine: the agent reads its new token before its next send.
    one = await enroll(client, secret, serial="SN-REENROLLED")
    one = await enroll(client, secret, serial="SN-REENROLLED")
    assert await report(client, one, one["token"], spool=str(uuid.uuid4()), seq=1) == 200
    # An admin revoked every token of a device: its agent gets 401 and must re-enrol.
    revoked = await enroll(client, secret, serial="SN-REVOKED")
    await db.execute("UPDATE device_tokens SET revoked_at = now() WHERE device_id = $1",
                     uuid.UUID(revoked["device_id"]))
    assert await report(client, revoked, revoked["token"], spool=str(uuid.uuid4()), seq=1) == 401
    # A retired device whose token was replaced before it was retired.
    retired = await enroll(client, secret, serial="SN-RETIRED")
    await enroll(client, secret, serial="SN-RETIRED")
    await db.execute("UPDATE devices SET status = 'retired' WHERE id = $1", uuid.UUID(retired["device_id"]))
    assert await report(client, retired, retired["token"], spool=str(uuid.uuid4()), seq=1) == 401
    # A token nobody ever issued.
    assert await report(client, one, "tice_dev_made-up", spool=str(uuid.uuid4()), seq=1) == 401
    assert await conflicts(db) == {}


async def test_a_request_in_flight_during_a_reenrolment_is_within_the_grace(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(shared_identity_grace_s=600)))
    secret = await add_school(db)
    old = await enroll(client, secret, serial="SN-1")
    await enroll(client, secret, serial="SN-1")
    assert await report(client, old, old["token"], spool=str(uuid.uuid4()), seq=1) == 401
    assert await conflicts(db) == {}


async def run(app, name: str) -> None:
    ctx = JobContext(pool=app[POOL], settings=app[SETTINGS], metrics=app[METRICS])
    assert await run_job(all_jobs()[name], ctx, force=True) == "ok"


async def test_two_spools_reporting_at_once_are_two_agents(aiohttp_client, make_settings, db, caplog):
    app = create_app(make_settings(shared_identity_grace_s=0))
    client = await aiohttp_client(app)
    secret = await add_school(db)
    cloned = await enroll(client, secret, serial="SN-CREDENTIALS-COPIED")
    replaced = await enroll(client, secret, serial="SN-SPOOL-REPLACED")
    a, b, old, new = (str(uuid.uuid4()) for _ in range(4))
    # The same credentials on two laptops: their spools interleave.
    for seq in (1, 2, 3):
        assert await report(client, cloned, cloned["token"], spool=a, seq=seq) == 200
        assert await report(client, cloned, cloned["token"], spool=b, seq=seq) == 200
    # A corrupt spool moved aside: the old one stops, the new one starts.
    for seq in (1, 2):
        assert await report(client, replaced, replaced["token"], spool=old, seq=seq) == 200
    for seq in (1, 2):
        assert await report(client, replaced, replaced["token"], spool=new, seq=seq) == 200
    with caplog.at_level(logging.WARNING, logger="tice.identity"):
        await run(app, IDENTITY.name)
        await run(app, IDENTITY.name)  # still going on: counted, not warned again within the hour
    assert await conflicts(db) == {uuid.UUID(cloned["device_id"]): (0, 2)}
    warnings = [r.getMessage() for r in caplog.records if r.name == "tice.identity"]
    assert len(warnings) == 1 and cloned["device_id"] in warnings[0] and "2 spools" in warnings[0]
    await run(app, "snapshot")
    assert await shared_metric(client) == {(SCHOOL, "laptop"): 1.0}
