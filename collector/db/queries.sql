-- Named queries. Each block starts with "-- name: <query_name>"; collector/db/queries.py loads them.

-- name: token_lookup
-- The device behind a bearer token (digest = SHA-256 of the token), if the token is live.
SELECT t.device_id, d.status
FROM device_tokens t JOIN devices d ON d.id = t.device_id
WHERE t.digest = $1 AND t.revoked_at IS NULL;

-- name: secret_lookup
SELECT id, school FROM enroll_secrets WHERE digest = $1 AND revoked_at IS NULL;

-- name: secret_count_device
-- Count one more device created by secret $1, unless it has created $2 already (no row back).
UPDATE enroll_secrets SET devices_created = devices_created + 1
WHERE id = $1 AND devices_created < $2 RETURNING devices_created;

-- name: secret_touch
UPDATE enroll_secrets SET last_used_at = now() WHERE id = $1;

-- name: devices_for_enroll
-- Every device with this serial, whatever its kind: a serial names one device.
SELECT id, kind, school, status FROM devices WHERE serial = $1 FOR UPDATE;

-- name: device_insert
INSERT INTO devices (serial, kind, school, enrolled_at) VALUES ($1, $2, $3, now()) RETURNING id;

-- name: device_mark_enrolled
-- enrolled_at is the first enrolment: a token rotation or a re-enrolment keeps it.
UPDATE devices SET enrolled_at = coalesce(enrolled_at, now()) WHERE id = $1;

-- name: tokens_revoked_notify
-- Tell every collector (LISTEN tice_tokens_revoked) to drop device $1 from its token cache;
-- delivered when the transaction commits.
SELECT pg_notify('tice_tokens_revoked', $1::text);

-- name: device_token_insert
INSERT INTO device_tokens (digest, device_id) VALUES ($1, $2);

-- name: peripheral_salt
-- The deployment's secret for peripheral identities, given to every enrolling agent.
SELECT salt FROM peripheral_identity;

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
SELECT id, school, label, created_at, revoked_at, last_used_at, devices_created FROM enroll_secrets
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

-- name: devices_by_serial
SELECT d.id, d.serial, d.kind, d.school, c.code AS class FROM devices d LEFT JOIN classes c ON c.id = d.class_id
WHERE d.serial = $1 ORDER BY d.kind;

-- name: device_by_id
SELECT d.id, d.serial, d.kind, d.school, c.code AS class FROM devices d LEFT JOIN classes c ON c.id = d.class_id
WHERE d.id = $1;

-- name: device_move
-- An admin's decision: the device now belongs to school $2, in class $3 (or none).
UPDATE devices SET school = $2, class_id = $3 WHERE id = $1;

-- name: class_id_of
SELECT id FROM classes WHERE school = $1 AND code = $2;

-- name: device_retire
UPDATE devices SET status = 'retired' WHERE id = $1 RETURNING id;

-- name: device_token_revoke_all
UPDATE device_tokens SET revoked_at = now() WHERE device_id = $1 AND revoked_at IS NULL
RETURNING digest;

-- name: ensure_partitions
SELECT tice_ensure_partitions($1::date, $2::date);

-- name: rollup_changed
-- (device, local day) pairs with records received since $1 (the watermark, minus an overlap
-- for transactions that committed late). $2 is the school time zone.
SELECT device_id, (at_corrected AT TIME ZONE $2)::date AS day FROM usage_records WHERE received_at > $1
UNION
SELECT device_id, (at_corrected AT TIME ZONE $2)::date FROM display_records WHERE received_at > $1
UNION
SELECT device_id, (at_corrected AT TIME ZONE $2)::date FROM modem_records WHERE received_at > $1
UNION
SELECT device_id, (at_corrected AT TIME ZONE $2)::date FROM projector_records WHERE received_at > $1;

-- name: rollup_upsert
-- Recompute whole days from the raw records: idempotent, so a late record simply makes its
-- day be recomputed. $1/$2 = the (device, day) pairs, $3 = the school time zone.
WITH pairs AS (
    SELECT DISTINCT p.device_id, p.day,
           (p.day::timestamp AT TIME ZONE $3) AS t0, ((p.day + 1)::timestamp AT TIME ZONE $3) AS t1
    FROM unnest($1::uuid[], $2::date[]) AS p(device_id, day)
),
u AS (
    SELECT p.device_id, p.day, sum(r.active_s) AS active_s, count(*) AS n,
           min(r.at_corrected) FILTER (WHERE r.active_s > 0) AS first_active,
           max(r.at_corrected + make_interval(secs => r.duration_s)) FILTER (WHERE r.active_s > 0) AS last_active
    FROM pairs p JOIN usage_records r
      ON r.device_id = p.device_id AND r.at_corrected >= p.t0 AND r.at_corrected < p.t1
    GROUP BY p.device_id, p.day
),
d AS (
    SELECT p.device_id, p.day, sum(r.external_s) AS external_s, count(*) AS n
    FROM pairs p JOIN display_records r
      ON r.device_id = p.device_id AND r.at_corrected >= p.t0 AND r.at_corrected < p.t1
    GROUP BY p.device_id, p.day
),
m AS (
    SELECT p.device_id, p.day, sum(coalesce(r.rx_bytes, 0) + coalesce(r.tx_bytes, 0)) AS bytes, count(*) AS n
    FROM pairs p JOIN modem_records r
      ON r.device_id = p.device_id AND r.at_corrected >= p.t0 AND r.at_corrected < p.t1
    GROUP BY p.device_id, p.day
),
j AS (
    SELECT p.device_id, p.day, count(*) AS n,
           sum(coalesce(r.duration_s, 60)) FILTER (WHERE r.power = 'on' OR r.lamp_on) AS on_s
    FROM pairs p JOIN projector_records r
      ON r.device_id = p.device_id AND r.at_corrected >= p.t0 AND r.at_corrected < p.t1
    GROUP BY p.device_id, p.day
)
INSERT INTO daily_usage AS du (device_id, day, active_s, external_display_s, projector_on_s, modem_bytes,
                               first_active_at, last_active_at, records, computed_at)
SELECT p.device_id, p.day, coalesce(u.active_s, 0), coalesce(d.external_s, 0), coalesce(j.on_s, 0),
       coalesce(m.bytes, 0), u.first_active, u.last_active,
       coalesce(u.n, 0) + coalesce(d.n, 0) + coalesce(m.n, 0) + coalesce(j.n, 0), now()
FROM pairs p
LEFT JOIN u ON u.device_id = p.device_id AND u.day = p.day
LEFT JOIN d ON d.device_id = p.device_id AND d.day = p.day
LEFT JOIN m ON m.device_id = p.device_id AND m.day = p.day
LEFT JOIN j ON j.device_id = p.device_id AND j.day = p.day
ON CONFLICT (device_id, day) DO UPDATE SET
    active_s = excluded.active_s, external_display_s = excluded.external_display_s,
    projector_on_s = excluded.projector_on_s, modem_bytes = excluded.modem_bytes,
    first_active_at = excluded.first_active_at, last_active_at = excluded.last_active_at,
    records = excluded.records, computed_at = excluded.computed_at;

-- name: rollup_watermark
SELECT watermark FROM rollup_state;

-- name: rollup_watermark_set
UPDATE rollup_state SET watermark = greatest(watermark, $1);

-- name: rollup_received_max
SELECT greatest(
    (SELECT max(received_at) FROM usage_records WHERE received_at > $1),
    (SELECT max(received_at) FROM display_records WHERE received_at > $1),
    (SELECT max(received_at) FROM modem_records WHERE received_at > $1),
    (SELECT max(received_at) FROM projector_records WHERE received_at > $1));

-- name: job_claim
-- Claim a job's slot; no row back means another replica already has it.
INSERT INTO job_runs (job, slot, runner) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING job;

-- name: job_finish
UPDATE job_runs SET finished_at = now(), ok = $3, detail = $4 WHERE job = $1 AND slot = $2;

-- name: job_last_success
SELECT job, extract(epoch FROM max(finished_at)) AS at FROM job_runs WHERE ok GROUP BY job;

-- name: job_runs_prune
DELETE FROM job_runs WHERE started_at < now() - interval '14 days';

-- name: partitions_list
-- Monthly partitions of the raw tables, with the month they hold.
SELECT c.relname AS name, p.relname AS parent
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname LIKE '%\_records' AND c.relname ~ '_[0-9]{6}$';


-- name: calendar_overrides_all
SELECT school, day, kind, label FROM calendar_overrides;

-- name: daily_used_since
-- Only the days a device could count as used on: rows under every threshold cannot change a
-- verdict, and leaving them in the database keeps the detection job light.
SELECT device_id, day, active_s, external_display_s, projector_on_s, modem_bytes
FROM daily_usage
WHERE day >= $1 AND (active_s >= $2 OR external_display_s >= $2 OR projector_on_s >= $2 OR modem_bytes >= $3);

-- name: fleet_devices
SELECT id, school, kind, class_id, status, enrolled_at, last_seen_at FROM devices;

-- name: daily_usage_since
SELECT device_id, day, active_s, external_display_s, projector_on_s, modem_bytes
FROM daily_usage WHERE day >= $1;

-- name: device_flags_insert
INSERT INTO device_flags (device_id, silent, low_use, verdict, used_days, judged_days, missed_days, silent_since)
SELECT * FROM unnest($1::uuid[], $2::bool[], $3::bool[], $4::text[], $5::int[], $6::int[], $7::int[], $8::date[]);

-- name: fleet_snapshot_set
INSERT INTO fleet_snapshot (computed_at, body) VALUES (now(), $1::jsonb)
ON CONFLICT (id) DO UPDATE SET computed_at = excluded.computed_at, body = excluded.body;

-- name: fleet_snapshot_get
SELECT extract(epoch FROM computed_at) AS computed_at, body::text AS body FROM fleet_snapshot;

-- name: last_record_day
-- Each device's last local day with records, up to $1.
SELECT device_id, max(day) AS day FROM daily_usage WHERE records > 0 AND day <= $1 GROUP BY device_id;

-- name: spool_dropped_by_device
-- Records the agents' bounded spools had to drop, per device (every spool it ever had).
SELECT device_id, sum(dropped)::bigint AS dropped FROM device_spools GROUP BY device_id;

-- name: token_superseded
-- A token no longer live because a later enrolment of its device replaced it (the device has
-- a live token made when this one was revoked), revoked more than $2 seconds ago: an agent
-- still holds it, so two agents share the device. Tokens revoked by an admin (no live token
-- left) or of retired devices are not this.
SELECT t.device_id, d.serial
FROM device_tokens t JOIN devices d ON d.id = t.device_id
WHERE t.digest = $1 AND t.revoked_at < now() - make_interval(secs => $2) AND d.status = 'active'
  AND EXISTS (SELECT 1 FROM device_tokens n
              WHERE n.device_id = t.device_id AND n.revoked_at IS NULL AND n.created_at >= t.revoked_at);

-- name: identity_conflict_note
-- Count one more sign that the device is used by two agents: $2 stale-token uses, $3 spools
-- reporting at once (the largest seen is kept). Returns whether a warning is due (first time,
-- or none logged for an hour), and marks it logged.
INSERT INTO device_identity_conflicts AS c (device_id, first_seen_at, last_seen_at, earlier_enrolment_uses,
                                            spools_at_once, logged_at)
VALUES ($1, now(), now(), $2, $3, now())
ON CONFLICT (device_id) DO UPDATE SET
    last_seen_at = now(),
    earlier_enrolment_uses = c.earlier_enrolment_uses + excluded.earlier_enrolment_uses,
    spools_at_once = greatest(c.spools_at_once, excluded.spools_at_once),
    logged_at = CASE WHEN c.logged_at IS NULL OR c.logged_at < now() - interval '1 hour'
                     THEN now() ELSE c.logged_at END
RETURNING (xmax = 0) OR logged_at = now() AS warn;

-- name: spools_at_once
-- Pairs of spools of one device where the older one still reported more than $2 seconds after
-- the newer one first did, both reporting since $1: two agents feed the device at once. A
-- spool that replaced another (a new install, a corrupt spool moved aside) does not overlap.
SELECT a.device_id, a.spool AS older, b.spool AS newer, d.serial
FROM device_spools a
JOIN device_spools b ON b.device_id = a.device_id AND b.first_seen_at > a.first_seen_at
JOIN devices d ON d.id = a.device_id
WHERE a.last_seen_at > b.first_seen_at + make_interval(secs => $2)
  AND a.last_seen_at > $1 AND b.last_seen_at > $1 AND d.status = 'active';

-- name: identity_conflicts_recent
-- Devices seen in use by two agents since $1.
SELECT device_id FROM device_identity_conflicts WHERE last_seen_at > $1;
