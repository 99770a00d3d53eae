"""Enrolment, token rotation and revocation, secrets, and the admin endpoints."""

from __future__ import annotations

import uuid

from tests.helpers import add_school, auth, enroll, usage_batch
from tice_collector.auth import digest


async def test_token_is_shown_once_and_stored_only_as_hash(client, db):
    dev = await enroll(client, await add_school(db))
    assert dev["token"].startswith("tice_dev_") and len(dev["token"]) > 40
    stored = await db.fetch("SELECT digest FROM device_tokens")
    assert [r["digest"] for r in stored] == [digest(dev["token"])]
    dump = " ".join(str(dict(r)) for r in await db.fetch("SELECT * FROM device_tokens"))
    assert dev["token"] not in dump


async def test_every_enrolment_gets_the_deployment_peripheral_salt(client, db):
    first = await enroll(client, await add_school(db), serial="SN-1")
    other_school = await enroll(client, await add_school(db, "0210002B"), serial="SN-2", kind="desktop")
    salt = await db.fetchval("SELECT salt FROM peripheral_identity")
    assert first["peripheral_salt"] == other_school["peripheral_salt"] == salt
    assert len(salt) == 64 and int(salt, 16) > 0


async def test_reenrolment_rotates_the_token(client, db):
    secret = await add_school(db)
    first = await enroll(client, secret, serial="SN-1")
    second = await enroll(client, secret, serial="SN-1")
    assert first["device_id"] == second["device_id"]
    assert first["token"] != second["token"]
    body = usage_batch(first["device_id"], 1)
    old = await client.post("/api/v1/reports", json=body, headers=auth(first["token"]))
    assert old.status == 401
    new = await client.post("/api/v1/reports", json=body, headers=auth(second["token"]))
    assert new.status == 200


async def test_bad_and_revoked_secrets_are_401(client, db):
    resp = await client.post("/api/v1/enroll", json={"secret": "tice_enr_wrong-secret", "serial": "S", "kind": "laptop"})
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_secret"
    secret = await add_school(db)
    await db.execute("UPDATE enroll_secrets SET revoked_at = now()")
    resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "S", "kind": "laptop"})
    assert resp.status == 401


async def test_enrol_with_bad_body_is_400(client, db):
    secret = await add_school(db)
    resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "S", "kind": "toaster"})
    assert resp.status == 400
    assert "$.kind" in (await resp.json())["detail"]
    resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "", "kind": "laptop"})
    assert resp.status == 400


async def test_device_of_another_school_cannot_enrol_here(client, db):
    secret_a = await add_school(db, "0210001A")
    secret_b = await add_school(db, "0210002B")
    await enroll(client, secret_a, serial="SN-MOVED")
    resp = await client.post("/api/v1/enroll", json={"secret": secret_b, "serial": "SN-MOVED", "kind": "laptop"})
    assert resp.status == 403
    assert (await resp.json())["error"] == "other_school"


async def test_inventory_device_keeps_its_class_when_it_enrols(client, db):
    secret = await add_school(db)
    class_id = await db.fetchval("INSERT INTO classes (school, code) VALUES ('0210001A', 'CP-A') RETURNING id")
    await db.execute("INSERT INTO devices (serial, kind, school, class_id) VALUES ('CB-1', 'chromebook', "
                     "'0210001A', $1)", class_id)
    dev = await enroll(client, secret, serial="CB-1", kind="chromebook")
    row = await db.fetchrow("SELECT class_id, enrolled_at FROM devices WHERE id = $1", uuid.UUID(dev["device_id"]))
    assert row["class_id"] == class_id and row["enrolled_at"] is not None


async def test_admin_endpoints_need_the_admin_token(client, db):
    await enroll(client, await add_school(db))
    assert (await client.get("/api/v1/admin/devices")).status == 401
    assert (await client.get("/api/v1/admin/devices", headers=auth("wrong"))).status == 401
    resp = await client.get("/api/v1/admin/devices", headers=auth("admin-secret-token"))
    assert resp.status == 200
    devices = (await resp.json())["devices"]
    assert len(devices) == 1 and devices[0]["has_token"] is True and devices[0]["serial"] == "SN-0001"
    bad = await client.get("/api/v1/admin/devices?limit=lots", headers=auth("admin-secret-token"))
    assert bad.status == 400


async def test_retired_device_cannot_report_or_reenrol(client, db):
    secret = await add_school(db)
    dev = await enroll(client, secret)
    resp = await client.post(f"/api/v1/admin/devices/{dev['device_id']}/retire", headers=auth("admin-secret-token"))
    assert resp.status == 200
    body = usage_batch(dev["device_id"], 1)
    assert (await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))).status == 401
    resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "SN-0001", "kind": "laptop"})
    assert resp.status == 403


async def test_reenrolment_keeps_the_first_enrolment_date(client, db):
    secret = await add_school(db)
    first = await enroll(client, secret, serial="LP-7")
    device_id = uuid.UUID(first["device_id"])
    await db.execute("UPDATE devices SET enrolled_at = now() - interval '30 days' WHERE id = $1", device_id)
    enrolled = await db.fetchval("SELECT enrolled_at FROM devices WHERE id = $1", device_id)
    # The agent enrols again after a 401; an admin rotates the token (revoke, then enrol).
    again = await enroll(client, secret, serial="LP-7")
    resp = await client.post(f"/api/v1/admin/devices/{device_id}/revoke", headers=auth("admin-secret-token"))
    assert resp.status == 200
    rotated = await enroll(client, secret, serial="LP-7")
    assert first["device_id"] == again["device_id"] == rotated["device_id"]
    assert await db.fetchval("SELECT enrolled_at FROM devices WHERE id = $1", device_id) == enrolled


async def test_enrolling_as_another_kind_never_moves_or_copies_a_device(client, db):
    secret_a = await add_school(db, "0210001A")
    secret_b = await add_school(db, "0210002B")
    await enroll(client, secret_a, serial="SN-MOVED", kind="laptop")
    resp = await client.post("/api/v1/enroll", json={"secret": secret_b, "serial": "SN-MOVED", "kind": "desktop"})
    assert resp.status == 403
    body = await resp.json()
    assert body["error"] == "other_school" and "tice-collector devices move SN-MOVED --school 0210002B" in body["detail"]
    resp = await client.post("/api/v1/enroll", json={"secret": secret_a, "serial": "SN-MOVED", "kind": "desktop"})
    assert resp.status == 409 and (await resp.json())["error"] == "kind_mismatch"
    rows = await db.fetch("SELECT school, kind FROM devices")
    assert [(r["school"], r["kind"]) for r in rows] == [("0210001A", "laptop")]


async def test_serials_are_one_spelling_and_blank_or_control_ones_are_refused(client, db):
    secret = await add_school(db)
    ids = {(await enroll(client, secret, serial=s, kind="chromebook"))["device_id"]
           for s in ("CB-001", "cb-001", " CB-001", "Cb-001\u00a0")}
    assert len(ids) == 1
    assert await db.fetchval("SELECT serial FROM devices") == "CB-001"
    for serial in (" ", "\u3000", "CB\x1b[2J", "CB-001\n", "\u0085"):
        resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": serial, "kind": "chromebook"})
        assert resp.status == 400, serial
        assert "$.serial" in (await resp.json())["detail"]
    assert await db.fetchval("SELECT count(*) FROM devices") == 1
