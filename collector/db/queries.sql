-- Named queries. Each block starts with "-- name: <query_name>"; collector/db/queries.py loads them.

-- name: token_lookup
-- The device behind a bearer token (digest = SHA-256 of the token), if the token is live.
SELECT t.device_id, d.status
FROM device_tokens t JOIN devices d ON d.id = t.device_id
WHERE t.digest = $1 AND t.revoked_at IS NULL;

-- name: secret_lookup
SELECT id, school FROM enroll_secrets WHERE digest = $1 AND revoked_at IS NULL;

-- name: secret_touch
UPDATE enroll_secrets SET last_used_at = now() WHERE id = $1;

-- name: device_for_enroll
SELECT id, school, status FROM devices WHERE serial = $1 AND kind = $2 FOR UPDATE;

-- name: device_insert
INSERT INTO devices (serial, kind, school, enrolled_at) VALUES ($1, $2, $3, now()) RETURNING id;

-- name: device_mark_enrolled
UPDATE devices SET enrolled_at = now() WHERE id = $1;

-- name: device_tokens_revoke
UPDATE device_tokens SET revoked_at = now() WHERE device_id = $1 AND revoked_at IS NULL;

-- name: device_token_insert
INSERT INTO device_tokens (digest, device_id) VALUES ($1, $2);

-- name: devices_touch
-- After a flush, in the same transaction: when each device last reported and its agent
-- version ($1..$3), and each spool's drop counter ($4..$7), which only grows: keep the largest.
WITH seen AS (
    UPDATE devices d
    SET last_seen_at = greatest(d.last_seen_at, v.seen),
        agent_version = coalesce(v.version, d.agent_version)
    FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS v(id, seen, version)
    WHERE d.id = v.id
)
INSERT INTO device_spools (device_id, spool, dropped, last_seen_at)
SELECT * FROM unnest($4::uuid[], $5::uuid[], $6::bigint[], $7::timestamptz[])
ON CONFLICT (device_id, spool) DO UPDATE
SET dropped = greatest(device_spools.dropped, excluded.dropped),
    last_seen_at = greatest(device_spools.last_seen_at, excluded.last_seen_at);

-- name: school_insert
INSERT INTO schools (uai, name, zone, kind, timetable) VALUES ($1, $2, $3, $4, $5);

-- name: school_exists
SELECT EXISTS (SELECT 1 FROM schools WHERE uai = $1);

-- name: schools_list
SELECT s.uai, s.name, s.zone, s.kind, s.timetable,
       (SELECT count(*) FROM classes c WHERE c.school = s.uai) AS classes,
       (SELECT count(*) FROM devices d WHERE d.school = s.uai) AS devices
FROM schools s ORDER BY s.uai;

-- name: class_insert
INSERT INTO classes (school, code, name) VALUES ($1, $2, $3) RETURNING id;

-- name: classes_of_school
SELECT id, code FROM classes WHERE school = $1;

-- name: secret_insert
INSERT INTO enroll_secrets (school, digest, label) VALUES ($1, $2, $3) RETURNING id;

-- name: secret_revoke
UPDATE enroll_secrets SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING school;

-- name: secrets_list
SELECT id, school, label, created_at, revoked_at, last_used_at FROM enroll_secrets
WHERE ($1::text IS NULL OR school = $1) ORDER BY id;

-- name: devices_list
SELECT d.id, d.serial, d.kind, d.school, c.code AS class, d.status, d.enrolled_at, d.last_seen_at,
       d.agent_version, EXISTS (SELECT 1 FROM device_tokens t
                                WHERE t.device_id = d.id AND t.revoked_at IS NULL) AS has_token
FROM devices d LEFT JOIN classes c ON c.id = d.class_id
WHERE ($1::text IS NULL OR d.school = $1)
ORDER BY d.school, d.kind, d.serial
LIMIT $2 OFFSET $3;

-- name: device_upsert_inventory
-- Inventory import: create the device, or move it to the school/class the inventory says.
INSERT INTO devices (serial, kind, school, class_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (serial, kind) DO UPDATE SET school = excluded.school, class_id = excluded.class_id
RETURNING (xmax = 0) AS inserted;

-- name: device_retire
UPDATE devices SET status = 'retired' WHERE id = $1 RETURNING id;

-- name: device_token_revoke_all
UPDATE device_tokens SET revoked_at = now() WHERE device_id = $1 AND revoked_at IS NULL
RETURNING digest;

-- name: ensure_partitions
SELECT tice_ensure_partitions($1::date, $2::date);
