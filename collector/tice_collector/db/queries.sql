-- Named queries. Each block starts with "-- name: <query_name>"; collector/tice_collector/db/queries.py loads them.

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

-- name: free_devices
-- Of the devices $1, those whose rows no other transaction holds against the writer (its check
-- after a flush waited writer_lock_timeout_s): the device row and every spool row of the
-- device, taken as flush_devices takes them (FOR NO KEY UPDATE), skipping the rows it cannot
-- take rather than waiting for them. A device one of whose spool rows is held is not free.
WITH free_devices AS MATERIALIZED (
    SELECT id FROM devices WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
), free_spools AS MATERIALIZED (
    SELECT device_id, spool FROM device_spools WHERE device_id = ANY($1::uuid[])
    ORDER BY device_id, spool FOR NO KEY UPDATE SKIP LOCKED
)
SELECT f.id FROM free_devices f
WHERE NOT EXISTS (
    SELECT 1 FROM device_spools s
    WHERE s.device_id = f.id
      AND NOT EXISTS (SELECT 1 FROM free_spools fs WHERE fs.device_id = s.device_id AND fs.spool = s.spool)
);

-- name: flush_devices
-- The first part of the writer's one statement per flush (db/records.py flush_sql, which adds
-- one insert per record type after it): when each device last reported and its agent version
-- ($1..$3), each spool's drop counter ($4..$7), which only grows: keep the largest, and the
-- seqs each spool delivered, as ranges [lo, hi] ($8..$11): added to those it had.
-- Lock order: writer transactions can run side by side (a backlog, a flush held up, several
-- worker processes); each taking its rows in one order means
-- none waits for a row another holds while holding one that other wants (a deadlock, SQLSTATE
-- 40P01). So the flush's devices are locked first, in id order (`locked`: LockRows runs above
-- the Sort, so rows are locked in ORDER BY order), before any other row the statement writes:
-- every part that writes rows counts `locked` whole in a one-time filter before its first row
-- (or, for `seen`, updates only the devices `locked` returned), whatever order PostgreSQL runs
-- the parts in. Every other row the flush writes (spools, records) belongs to a device it now
-- holds; spools and records are still written in key order.
locked AS (
    -- NO KEY UPDATE, as the update below needs: it does not wait for the KEY SHARE locks that
    -- inserts referencing a device take (the rollup's daily_usage rows, a peripheral's host),
    -- so a rollup that waits on one device cannot hold up the flushes of all it has written.
    SELECT id FROM devices WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE
),
seen AS (
    UPDATE devices d
    SET last_seen_at = greatest(d.last_seen_at, v.seen),
        agent_version = coalesce(v.version, d.agent_version)
    FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS v(id, seen, version)
    WHERE d.id = v.id AND v.id IN (SELECT id FROM locked)
),
ranges AS (
    SELECT device_id, spool, range_agg(int8range(lo, hi, '[]')) AS seqs
    FROM unnest($8::uuid[], $9::uuid[], $10::bigint[], $11::bigint[]) AS r(device_id, spool, lo, hi)
    GROUP BY device_id, spool
),
spools AS (
    INSERT INTO device_spools (device_id, spool, dropped, last_seen_at, seqs)
    SELECT s.device_id, s.spool, s.dropped, s.seen, coalesce(r.seqs, '{}')
    FROM unnest($4::uuid[], $5::uuid[], $6::bigint[], $7::timestamptz[]) AS s(device_id, spool, dropped, seen)
    LEFT JOIN ranges r ON r.device_id = s.device_id AND r.spool = s.spool
    WHERE (SELECT count(*) FROM locked) >= 0
    ORDER BY s.device_id, s.spool
    ON CONFLICT (device_id, spool) DO UPDATE
    SET dropped = greatest(device_spools.dropped, excluded.dropped),
        last_seen_at = greatest(device_spools.last_seen_at, excluded.last_seen_at),
        seqs = device_spools.seqs + excluded.seqs
)

-- name: school_insert
INSERT INTO schools (uai, name, zone, kind, timetable) VALUES ($1, $2, $3, $4, $5);

-- name: school_exists
SELECT EXISTS (SELECT 1 FROM schools WHERE uai = $1);

-- name: schools_list
SELECT s.uai, s.name, s.zone, s.kind, s.timetable,
       (SELECT count(*) FROM classes c WHERE c.school = s.uai) AS classes,
       (SELECT count(*) FROM devices d WHERE d.school = s.uai) AS devices
FROM schools s ORDER BY s.uai;

-- name: school_timetables
SELECT uai, timetable FROM schools;

-- name: school_hours_all
SELECT school, weekday, periods FROM school_hours;

-- name: school_hours_of
SELECT weekday, periods FROM school_hours WHERE school = $1 ORDER BY weekday;

-- name: school_hours_set
INSERT INTO school_hours (school, weekday, periods) VALUES ($1, $2, $3)
ON CONFLICT (school, weekday) DO UPDATE SET periods = excluded.periods;

-- name: school_hours_reset
DELETE FROM school_hours WHERE school = $1 AND weekday = ANY($2::smallint[]);

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
-- Each device with its latest verdict (NULL columns when the detect job has not judged it).
SELECT d.id, d.serial, d.kind, d.school, c.code AS class, d.status, d.enrolled_at, d.last_seen_at,
       d.agent_version, EXISTS (SELECT 1 FROM device_tokens t
                                WHERE t.device_id = d.id AND t.revoked_at IS NULL) AS has_token,
       f.verdict, f.used_days, f.judged_days, f.judged_from, f.out_of_hours_days, f.silent, f.device_days,
       f.google_days, EXISTS (SELECT 1 FROM google_devices g WHERE g.device_id = d.id) AS google_listed
FROM devices d LEFT JOIN classes c ON c.id = d.class_id LEFT JOIN device_flags f ON f.device_id = d.id
WHERE ($1::text IS NULL OR d.school = $1)
ORDER BY d.school, d.kind, d.serial
LIMIT $2 OFFSET $3;

-- name: devices_verdicts
-- Each device's latest verdict, as devices_list, for school $1, kind $2 (NULL: all); $3 true
-- keeps only the active devices that never reported since their enrolment or import.
SELECT d.id, d.serial, d.kind, d.school, c.code AS class, d.status, d.enrolled_at, d.last_seen_at,
       d.agent_version, EXISTS (SELECT 1 FROM device_tokens t
                                WHERE t.device_id = d.id AND t.revoked_at IS NULL) AS has_token,
       f.verdict, f.used_days, f.judged_days, f.judged_from, f.out_of_hours_days, f.silent, f.device_days,
       f.google_days, EXISTS (SELECT 1 FROM google_devices g WHERE g.device_id = d.id) AS google_listed
FROM devices d LEFT JOIN classes c ON c.id = d.class_id LEFT JOIN device_flags f ON f.device_id = d.id
WHERE ($1::text IS NULL OR d.school = $1) AND ($2::text IS NULL OR d.kind = $2)
  AND (NOT $3 OR (d.last_seen_at IS NULL AND d.status = 'active'))
ORDER BY d.school, d.kind, d.serial;

-- name: device_upsert_inventory
-- Inventory import: create the device, or move it to the school/class the inventory says.
INSERT INTO devices (serial, kind, school, class_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (serial, kind) DO UPDATE SET school = excluded.school, class_id = excluded.class_id
RETURNING (xmax = 0) AS inserted;

-- name: devices_of_serials
-- What the inventory already knows of the serials an import lists.
SELECT serial, kind, school FROM devices WHERE serial = ANY($1::text[]) ORDER BY serial, kind;

-- name: admin_lock_xact
-- An admin command's advisory lock, held until its transaction ends: key space $1, the command's key $2.
SELECT pg_advisory_xact_lock($1, $2);

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

-- name: peripherals_register
-- Register every peripheral (3G key, projector, backup disk) whose identity is in the readings
-- received since $1, as a device of its kind (serial = its PeripheralId) in the school of the
-- host that sent its latest reading, and remember that host (peripherals). A device's
-- enrolled_at is the peripheral's first reading (an earlier one arriving late moves it back);
-- last_seen_at is when the last reading in which it answered arrived: a key up, a projector up
-- with a known power state, a disk plugged in; for a disk that is not plugged in, its host's
-- remembered last connection counts too (an unplugged backup disk was seen when it was last
-- connected, not never). A reading without an identity registers nothing:
-- it stays a reading of its host. Returns each peripheral seen, `new` when registered now.
WITH readings AS (
    SELECT 'modem'::text AS kind, r.modem_id AS pid, r.device_id AS host,
           r.at_corrected + make_interval(secs => coalesce(r.duration_s, 0)) AS taken, r.received_at,
           r.up AS answered, NULL::timestamptz AS remembered
    FROM modem_records r WHERE r.received_at > $1 AND r.modem_id IS NOT NULL
    UNION ALL
    SELECT 'projector', r.projector_id, r.device_id, r.at_corrected + make_interval(secs => coalesce(r.duration_s, 0)),
           r.received_at, r.up AND r.power <> 'unknown', NULL
    FROM projector_records r WHERE r.received_at > $1 AND r.projector_id IS NOT NULL
    UNION ALL
    -- The last connection a disk's agent remembers is on the device's clock: corrected as `at` was.
    SELECT 'disk', r.disk_id, r.device_id, r.at_corrected, r.received_at, r.present,
           r.last_connected_at + (r.at_corrected - r.at)
    FROM disk_records r WHERE r.received_at > $1 AND r.disk_id IS NOT NULL
),
latest AS (
    SELECT DISTINCT ON (kind, pid) kind, pid, host, taken FROM readings ORDER BY kind, pid, taken DESC, host
),
summary AS (
    SELECT kind, pid, min(taken) AS first_at,
           greatest(max(received_at) FILTER (WHERE answered), max(remembered)) AS seen_at,
           greatest(max(taken) FILTER (WHERE answered), max(remembered)) AS connected_at
    FROM readings GROUP BY kind, pid
),
registered AS (
    INSERT INTO devices AS d (serial, kind, school, enrolled_at, last_seen_at)
    SELECT s.pid, s.kind, h.school, s.first_at, s.seen_at
    FROM summary s JOIN latest l USING (kind, pid) JOIN devices h ON h.id = l.host
    ON CONFLICT (serial, kind) DO UPDATE
    SET enrolled_at = least(d.enrolled_at, excluded.enrolled_at),
        last_seen_at = greatest(d.last_seen_at, excluded.last_seen_at)
    RETURNING d.id, d.serial, d.kind, (d.xmax = 0) AS new
)
INSERT INTO peripherals AS p (device_id, host_id, host_seen_at, last_connected_at)
SELECT g.id, l.host, l.taken, s.connected_at
FROM registered g JOIN latest l ON l.kind = g.kind AND l.pid = g.serial
JOIN summary s ON s.kind = g.kind AND s.pid = g.serial
ON CONFLICT (device_id) DO UPDATE
SET host_id = CASE WHEN excluded.host_seen_at >= p.host_seen_at THEN excluded.host_id ELSE p.host_id END,
    host_seen_at = greatest(p.host_seen_at, excluded.host_seen_at),
    last_connected_at = greatest(p.last_connected_at, excluded.last_connected_at)
RETURNING p.device_id, (SELECT g.new FROM registered g WHERE g.id = p.device_id) AS new;

-- name: peripherals_follow_hosts
-- A peripheral belongs to the school of the host that reported it last: a 3G key or a backup
-- disk taken to another school moves there with its history (its identity is the same on every
-- agent of the deployment). Returns the peripherals moved, with their new school.
UPDATE devices d SET school = h.school, class_id = NULL
FROM peripherals p JOIN devices h ON h.id = p.host_id
WHERE p.device_id = d.id AND d.school <> h.school
RETURNING d.id, d.kind, d.serial, d.school;

-- name: rollup_changed
-- (device, local day, school) for every day touched by records received since $1 (the watermark,
-- minus an overlap for transactions that committed late): the day an interval starts and the day
-- it ends, when it crosses midnight. $2 is the school time zone, $3 the longest interval (s).
-- A reading with a peripheral's identity touches the peripheral's day (peripherals_register ran
-- first), one without touches its host's; a host's external-display record also touches the day
-- of each projector it hosts (its stand-in on a day the projector gave no reading).
WITH display_touched AS (
    SELECT r.device_id, x.day FROM display_records r, LATERAL (VALUES ((r.at_corrected AT TIME ZONE $2)::date),
        (((r.at_corrected + make_interval(secs => greatest(least(r.duration_s, $3) - 1e-6, 0))) AT TIME ZONE $2)::date)) x(day)
    WHERE r.received_at > $1
),
touched AS (
    SELECT r.device_id, x.day FROM usage_records r, LATERAL (VALUES ((r.at_corrected AT TIME ZONE $2)::date),
        (((r.at_corrected + make_interval(secs => greatest(least(r.duration_s, $3) - 1e-6, 0))) AT TIME ZONE $2)::date)) x(day)
    WHERE r.received_at > $1
    UNION
    SELECT device_id, day FROM display_touched
    UNION
    SELECT r.device_id, x.day FROM modem_records r, LATERAL (VALUES ((r.at_corrected AT TIME ZONE $2)::date),
        (((r.at_corrected + make_interval(secs => least(coalesce(nullif(r.duration_s, 0), 60), $3) - 1e-6))
          AT TIME ZONE $2)::date)) x(day)
    WHERE r.received_at > $1 AND r.modem_id IS NULL
    UNION
    SELECT r.device_id, x.day FROM projector_records r, LATERAL (VALUES ((r.at_corrected AT TIME ZONE $2)::date),
        (((r.at_corrected + make_interval(secs => least(coalesce(nullif(r.duration_s, 0), 60), $3) - 1e-6))
          AT TIME ZONE $2)::date)) x(day)
    WHERE r.received_at > $1 AND r.projector_id IS NULL
    UNION
    SELECT pd.id, x.day FROM modem_records r JOIN devices pd ON pd.serial = r.modem_id AND pd.kind = 'modem',
        LATERAL (VALUES ((r.at_corrected AT TIME ZONE $2)::date),
        (((r.at_corrected + make_interval(secs => least(coalesce(nullif(r.duration_s, 0), 60), $3) - 1e-6))
          AT TIME ZONE $2)::date)) x(day)
    WHERE r.received_at > $1 AND r.modem_id IS NOT NULL
    UNION
    SELECT pd.id, x.day FROM projector_records r JOIN devices pd ON pd.serial = r.projector_id AND pd.kind = 'projector',
        LATERAL (VALUES ((r.at_corrected AT TIME ZONE $2)::date),
        (((r.at_corrected + make_interval(secs => least(coalesce(nullif(r.duration_s, 0), 60), $3) - 1e-6))
          AT TIME ZONE $2)::date)) x(day)
    WHERE r.received_at > $1 AND r.projector_id IS NOT NULL
    UNION
    SELECT pd.id, (r.at_corrected AT TIME ZONE $2)::date
    FROM disk_records r JOIN devices pd ON pd.serial = r.disk_id AND pd.kind = 'disk'
    WHERE r.received_at > $1 AND r.disk_id IS NOT NULL
    UNION
    SELECT p.device_id, t.day FROM display_touched t JOIN peripherals p ON p.host_id = t.device_id
    JOIN devices pd ON pd.id = p.device_id AND pd.kind = 'projector'
)
SELECT t.device_id, t.day, d.school FROM touched t JOIN devices d ON d.id = t.device_id;

-- name: rollup_school_days
-- (device, local day, school) for every day of school $1's devices with records taken, or a
-- figure from Google, since $2 (a date), to recompute them after the school's teaching hours
-- changed. $3 = time zone. Peripherals: every day they have a daily row for.
WITH touched AS (
    SELECT r.device_id, (r.at_corrected AT TIME ZONE $3)::date AS day
    FROM usage_records r JOIN devices d ON d.id = r.device_id
    WHERE d.school = $1 AND r.at_corrected >= ($2::date)::timestamp AT TIME ZONE $3
    UNION
    SELECT r.device_id, (r.at_corrected AT TIME ZONE $3)::date
    FROM display_records r JOIN devices d ON d.id = r.device_id
    WHERE d.school = $1 AND r.at_corrected >= ($2::date)::timestamp AT TIME ZONE $3
    UNION
    SELECT r.device_id, (r.at_corrected AT TIME ZONE $3)::date
    FROM modem_records r JOIN devices d ON d.id = r.device_id
    WHERE d.school = $1 AND r.at_corrected >= ($2::date)::timestamp AT TIME ZONE $3 AND r.modem_id IS NULL
    UNION
    SELECT r.device_id, (r.at_corrected AT TIME ZONE $3)::date
    FROM projector_records r JOIN devices d ON d.id = r.device_id
    WHERE d.school = $1 AND r.at_corrected >= ($2::date)::timestamp AT TIME ZONE $3 AND r.projector_id IS NULL
    UNION
    SELECT g.device_id, g.day
    FROM google_daily_usage g JOIN devices d ON d.id = g.device_id
    WHERE d.school = $1 AND g.day >= $2::date
    UNION
    SELECT du.device_id, du.day
    FROM daily_usage du JOIN peripherals p ON p.device_id = du.device_id JOIN devices d ON d.id = du.device_id
    WHERE d.school = $1 AND du.day >= $2::date
)
SELECT t.device_id, t.day, $1::text AS school FROM touched t;

-- name: rollup_upsert
-- Recompute whole days from the raw records: idempotent, so a late record simply makes its
-- day be recomputed. $1/$2 = the (device, day) pairs (distinct), $3 = the school time zone,
-- $4 = the longest interval a record may cover (s), $5/$6 = for each pair in order, the starts
-- and ends of its teaching periods as Unix times, 4 per pair (padded with empty periods).
--
-- Each record is an interval [s, s + len) carrying an amount (active seconds, external-display
-- seconds, lamp-on seconds, bytes, connected seconds) spread evenly over it. A device's intervals
-- of one kind are merged on the time axis, first come first kept: each interval keeps only the
-- time no earlier one (by start) covered, and the part of the day it covers, with its amount in
-- proportion. So a repeated or overlapping interval never counts twice (a projector polled by two
-- PCs is on once), an interval crossing midnight is split between its two days, and no day holds
-- more than its own length.
--
-- A host (a computer) is rolled up from its usage and display records and from the 3G-key and
-- projector readings it sent without a peripheral's identity. A peripheral (a device with a
-- `peripherals` row) is rolled up from the readings carrying its identity, whichever host sent
-- them: a 3G key's bytes and connected time; a projector's on-time, from its power state or,
-- where its lamp counter proves more, from the counter, and its host's external-display time on
-- a day it gave no reading; a backup disk's first and last connection of the day. A peripheral's
-- `records` are its readings in which it answered (a key up, a projector up with a known power
-- state, a disk plugged in), and first/last_active_at the first and last of them.
WITH pairs AS (
    SELECT p.i, p.device_id, p.day, t.t0, t.t1, date_part('epoch', t.t0) AS t0e, date_part('epoch', t.t1) AS t1e,
           a[k] AS a1, b[k] AS b1, a[k + 1] AS a2, b[k + 1] AS b2, a[k + 2] AS a3, b[k + 2] AS b3,
           a[k + 3] AS a4, b[k + 3] AS b4,
           (b[k] - a[k]) + (b[k + 1] - a[k + 1]) + (b[k + 2] - a[k + 2]) + (b[k + 3] - a[k + 3]) AS teaching_s,
           CASE WHEN pe.device_id IS NOT NULL THEN d.kind END AS pkind, d.serial AS pid, pe.host_id
    FROM unnest($1::uuid[], $2::date[]) WITH ORDINALITY AS p(device_id, day, i)
         JOIN devices d ON d.id = p.device_id
         LEFT JOIN peripherals pe ON pe.device_id = p.device_id
         CROSS JOIN LATERAL (SELECT (p.day::timestamp AT TIME ZONE $3) AS t0, ((p.day + 1)::timestamp AT TIME ZONE $3) AS t1,
                                    $5::float8[] AS a, $6::float8[] AS b, (4 * p.i - 3)::int AS k) t
    ORDER BY p.i
),
spans AS (
    -- Per pair (in order, so the merge below sorts each pair's few hundred rows, not all of
    -- them): every record touching its day, the $4 seconds before included (an interval from there may
    -- cross midnight), as Unix times; intervals longer than $4 (stored before the door refused
    -- them) cut to $4 with their amount in proportion. A projector reading without a duration
    -- stands for 60 s, a 3G-key reading too when it carries bytes or connected time; without
    -- either (the first reading after the agent starts) it is a moment, so that the intervals
    -- the agent reads next, however short, are not hidden behind it. `counts`: the record
    -- counts in the day's `records`.
    SELECT p.i, p.t0e, p.t1e, p.a1, p.b1, p.a2, p.b2, p.a3, p.b3, p.a4, p.b4, r.kind, r.counts,
           date_part('epoch', r.s) AS s,
           CASE WHEN r.kind = 'l' THEN r.dur ELSE least(r.dur, $4) END AS len,
           CASE WHEN r.kind = 'l' OR r.dur <= $4 THEN r.amount ELSE r.amount * $4 / r.dur END AS amount
    FROM pairs p CROSS JOIN LATERAL (
        -- A host: its own records, and the readings it sent without a peripheral's identity.
        SELECT 'u'::"char" AS kind, r.at_corrected AS s, r.duration_s AS dur,
               least(r.active_s, r.duration_s) AS amount, true AS counts
        FROM usage_records r WHERE p.pkind IS NULL AND r.device_id = p.device_id
         AND r.at_corrected >= p.t0 - make_interval(secs => $4) AND r.at_corrected < p.t1
        UNION ALL
        SELECT 'd', r.at_corrected, r.duration_s, least(r.external_s, r.duration_s), true
        FROM display_records r WHERE p.pkind IS NULL AND r.device_id = p.device_id
         AND r.at_corrected >= p.t0 - make_interval(secs => $4) AND r.at_corrected < p.t1
        UNION ALL
        SELECT 'm', r.at_corrected,
               CASE WHEN r.duration_s > 0 THEN r.duration_s
                    WHEN r.rx_bytes IS NULL AND r.tx_bytes IS NULL AND r.connected_s IS NULL THEN 0 ELSE 60 END,
               coalesce(r.rx_bytes, 0) + coalesce(r.tx_bytes, 0), true
        FROM modem_records r WHERE p.pkind IS NULL AND r.device_id = p.device_id AND r.modem_id IS NULL
         AND r.at_corrected >= p.t0 - make_interval(secs => $4) AND r.at_corrected < p.t1
        UNION ALL
        SELECT 'j', r.at_corrected, coalesce(nullif(r.duration_s, 0), 60),
               CASE WHEN r.power = 'on' OR r.lamp_on THEN coalesce(nullif(r.duration_s, 0), 60) ELSE 0 END, true
        FROM projector_records r WHERE p.pkind IS NULL AND r.device_id = p.device_id AND r.projector_id IS NULL
         AND r.at_corrected >= p.t0 - make_interval(secs => $4) AND r.at_corrected < p.t1
        UNION ALL
        -- A 3G key, from any host: the bytes of each interval ('m'; the agent derives them from
        -- the key's counters, a counter reset included, so they are never negative) and its
        -- connected part ('c', never more than the interval).
        SELECT x.kind, r.at_corrected, r.len,
               CASE WHEN x.kind = 'm' THEN coalesce(r.rx_bytes, 0) + coalesce(r.tx_bytes, 0)
                    ELSE least(coalesce(r.connected_s, 0), r.len) END,
               x.kind = 'm' AND r.up
        FROM (SELECT r.*, CASE WHEN r.duration_s > 0 THEN r.duration_s
                               WHEN r.rx_bytes IS NULL AND r.tx_bytes IS NULL AND r.connected_s IS NULL THEN 0
                               ELSE 60 END AS len
              FROM modem_records r) r CROSS JOIN (VALUES ('m'::"char"), ('c'::"char")) x(kind)
        WHERE p.pkind = 'modem' AND r.modem_id = p.pid
         AND r.at_corrected >= p.t0 - make_interval(secs => $4) AND r.at_corrected < p.t1
        UNION ALL
        -- A projector, from any host: on for the interval of a reading that finds it on.
        SELECT 'j', r.at_corrected, coalesce(nullif(r.duration_s, 0), 60),
               CASE WHEN r.power = 'on' OR r.lamp_on THEN coalesce(nullif(r.duration_s, 0), 60) ELSE 0 END,
               r.up AND r.power <> 'unknown'
        FROM projector_records r WHERE p.pkind = 'projector' AND r.projector_id = p.pid
         AND r.at_corrected >= p.t0 - make_interval(secs => $4) AND r.at_corrected < p.t1
        UNION ALL
        -- Its lamp counter ('l'): whole hours, so growing by n hours between the day's first and
        -- last readings proves at least n - 1 hours lit in between (the PC that polls it may have
        -- been off while another used it), spread evenly over that span as when is not known.
        -- The highest reading less the first: a lamp replaced that day (counter back to 0) is not
        -- negative.
        SELECT 'l', min(q.taken), date_part('epoch', max(q.taken) - min(q.taken)),
               least(3600.0 * greatest(max(q.h) - (array_agg(q.h ORDER BY q.taken))[1] - 1, 0),
                     date_part('epoch', max(q.taken) - min(q.taken))),
               false
        FROM (SELECT r.at_corrected + make_interval(secs => coalesce(r.duration_s, 0)) AS taken, r.lamp_hours AS h
              FROM projector_records r WHERE p.pkind = 'projector' AND r.projector_id = p.pid
               AND r.lamp_hours IS NOT NULL AND r.at_corrected >= p.t0 AND r.at_corrected < p.t1) q
        HAVING count(*) > 1
        UNION ALL
        -- Its host's external display: the projector's stand-in on a day it gave no reading.
        SELECT 'd', r.at_corrected, r.duration_s, least(r.external_s, r.duration_s), false
        FROM display_records r WHERE p.pkind = 'projector' AND r.device_id = p.host_id
         AND r.at_corrected >= p.t0 - make_interval(secs => $4) AND r.at_corrected < p.t1
        UNION ALL
        -- A backup disk: each reading is a moment; plugged in or not.
        SELECT 'k', r.at_corrected, 0, 0, r.present
        FROM disk_records r WHERE p.pkind = 'disk' AND r.disk_id = p.pid
         AND r.at_corrected >= p.t0 AND r.at_corrected < p.t1
    ) r
),
kept AS (
    -- Each interval keeps what comes after the end of the furthest-reaching earlier one of its
    -- kind (same start: the shorter first, then the larger amount, so the result never depends
    -- on the order rows are read in), cut to the day: the piece [ks, ke), and how much of it lies
    -- in teaching periods.
    SELECT i, kind, counts, amount, s, len, t1e, s >= t0e AS starts_today, ks, ke, greatest(ke - ks, 0) AS kept,
           greatest(least(ke, b1) - greatest(ks, a1), 0) + greatest(least(ke, b2) - greatest(ks, a2), 0)
         + greatest(least(ke, b3) - greatest(ks, a3), 0) + greatest(least(ke, b4) - greatest(ks, a4), 0) AS inside
    FROM (SELECT *, greatest(s, t0e, max(s + len) OVER earlier) AS ks, least(s + len, t1e) AS ke
          FROM spans
          WINDOW earlier AS (PARTITION BY i, kind ORDER BY s, len, amount DESC
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) w
),
shares AS (
    -- A piece that is the whole interval keeps its amount exactly (no rounding from dividing).
    SELECT i, kind, counts, starts_today, s, len, t1e, ks, ke, amount,
           CASE WHEN kept >= len - 1e-6 THEN amount ELSE amount * kept / len END AS total,
           CASE WHEN inside >= len - 1e-6 THEN amount ELSE amount * inside / len END AS in_hours
    FROM kept
),
by_kind AS (
    SELECT i, kind, sum(total) AS total, sum(in_hours) AS in_hours,
           count(*) FILTER (WHERE starts_today AND counts) AS n,
           min(ks) FILTER (WHERE amount > 0 AND ke > ks) AS first_active,
           max(ke) FILTER (WHERE amount > 0 AND ke > ks) AS last_active,
           min(s) FILTER (WHERE starts_today AND counts) AS first_answered,
           max(least(s + len, t1e)) FILTER (WHERE starts_today AND counts) AS last_answered
    FROM shares GROUP BY i, kind
),
agg AS (
    SELECT i,
           sum(total) FILTER (WHERE kind = 'u') AS active_s, sum(in_hours) FILTER (WHERE kind = 'u') AS active_in,
           sum(total) FILTER (WHERE kind = 'd') AS external_s, sum(in_hours) FILTER (WHERE kind = 'd') AS external_in,
           sum(total) FILTER (WHERE kind = 'j') AS on_s, sum(in_hours) FILTER (WHERE kind = 'j') AS on_in,
           sum(total) FILTER (WHERE kind = 'l') AS lamp_s, sum(in_hours) FILTER (WHERE kind = 'l') AS lamp_in,
           round(sum(total) FILTER (WHERE kind = 'm'))::bigint AS bytes,
           round(sum(in_hours) FILTER (WHERE kind = 'm'))::bigint AS bytes_in,
           sum(total) FILTER (WHERE kind = 'c') AS connected_s,
           sum(n) AS n, sum(n) FILTER (WHERE kind = 'u') AS usage_n,
           to_timestamp(min(first_active) FILTER (WHERE kind = 'u')) AS first_active,
           to_timestamp(max(last_active) FILTER (WHERE kind = 'u')) AS last_active,
           to_timestamp(min(first_answered)) AS first_answered,
           to_timestamp(max(last_answered)) AS last_answered
    FROM by_kind GROUP BY i
),
sourced AS (
    -- Active time has two sources (docs/usage-policy.md, "Two sources for Chromebooks"): the
    -- device's own usage records taken that day (the Chrome extension, the agent) win whenever
    -- there is one; else Google's daily total, which has no time of day: it counts in hours up
    -- to the day's teaching time, the rest out of hours. Never both: no double counting.
    -- A peripheral has no usage records and no Google figure: its source is 'none'.
    SELECT p.i, a.active_s, a.active_in, a.external_s, a.external_in, a.on_s, a.on_in, a.lamp_s, a.lamp_in,
           a.bytes, a.bytes_in, a.connected_s, a.n, a.first_active, a.last_active, a.first_answered,
           a.last_answered, g.active_ms::float8 / 1000 AS google_s,
           CASE WHEN coalesce(a.usage_n, 0) > 0 THEN 'device'
                WHEN g.active_ms IS NOT NULL THEN 'google' ELSE 'none' END AS source,
           p.teaching_s
    FROM pairs p LEFT JOIN agg a ON a.i = p.i
    LEFT JOIN google_daily_usage g ON g.device_id = p.device_id AND g.day = p.day
)
INSERT INTO daily_usage AS du (device_id, day, active_s, external_display_s, projector_on_s, modem_bytes,
                               active_in_hours_s, external_display_in_hours_s, projector_on_in_hours_s,
                               modem_in_hours_bytes, modem_connected_s, first_active_at, last_active_at, records,
                               computed_at, active_source, google_active_s)
SELECT p.device_id, p.day,
       CASE WHEN s.source = 'google' THEN s.google_s ELSE coalesce(s.active_s, 0) END,
       CASE WHEN p.pkind = 'projector' AND s.n > 0 THEN 0 ELSE coalesce(s.external_s, 0) END,
       greatest(coalesce(s.on_s, 0), coalesce(s.lamp_s, 0)),
       coalesce(s.bytes, 0),
       CASE WHEN s.source = 'google' THEN least(s.google_s, s.teaching_s) ELSE coalesce(s.active_in, 0) END,
       CASE WHEN p.pkind = 'projector' AND s.n > 0 THEN 0 ELSE coalesce(s.external_in, 0) END,
       greatest(coalesce(s.on_in, 0), coalesce(s.lamp_in, 0)),
       coalesce(s.bytes_in, 0), coalesce(s.connected_s, 0),
       CASE WHEN s.source = 'google' THEN NULL WHEN p.pkind IS NULL THEN s.first_active ELSE s.first_answered END,
       CASE WHEN s.source = 'google' THEN NULL WHEN p.pkind IS NULL THEN s.last_active ELSE s.last_answered END,
       coalesce(s.n, 0), now(), s.source, s.google_s
FROM pairs p JOIN sourced s ON s.i = p.i
ON CONFLICT (device_id, day) DO UPDATE SET
    active_s = excluded.active_s, external_display_s = excluded.external_display_s,
    projector_on_s = excluded.projector_on_s, modem_bytes = excluded.modem_bytes,
    active_in_hours_s = excluded.active_in_hours_s, external_display_in_hours_s = excluded.external_display_in_hours_s,
    projector_on_in_hours_s = excluded.projector_on_in_hours_s, modem_in_hours_bytes = excluded.modem_in_hours_bytes,
    modem_connected_s = excluded.modem_connected_s,
    first_active_at = excluded.first_active_at, last_active_at = excluded.last_active_at,
    records = excluded.records, computed_at = excluded.computed_at,
    active_source = excluded.active_source, google_active_s = excluded.google_active_s;

-- name: rollup_watermark
SELECT watermark FROM rollup_state;

-- name: rollup_watermark_set
UPDATE rollup_state SET watermark = greatest(watermark, $1);

-- name: rollup_received_max
SELECT greatest(
    (SELECT max(received_at) FROM usage_records WHERE received_at > $1),
    (SELECT max(received_at) FROM display_records WHERE received_at > $1),
    (SELECT max(received_at) FROM modem_records WHERE received_at > $1),
    (SELECT max(received_at) FROM projector_records WHERE received_at > $1),
    (SELECT max(received_at) FROM disk_records WHERE received_at > $1));

-- name: job_claim
-- Claim a job's slot; no row back means another replica already has it.
INSERT INTO job_runs (job, slot, runner) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING job;

-- name: job_finish
UPDATE job_runs SET finished_at = now(), ok = $3, detail = $4 WHERE job = $1 AND slot = $2;

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
SELECT device_id, day, active_s, external_display_s, projector_on_s, modem_bytes, active_in_hours_s,
       external_display_in_hours_s, projector_on_in_hours_s, modem_in_hours_bytes
FROM daily_usage
WHERE day >= $1 AND (active_s >= $2 OR external_display_s >= $2 OR projector_on_s >= $2 OR modem_bytes >= $3);

-- name: fleet_devices
-- Every device; google_since: the earliest local day Google knows it from ($1 = the time zone),
-- NULL for a device Google does not list.
SELECT d.id, d.school, d.kind, d.class_id, d.status, d.enrolled_at, d.last_seen_at, g.since AS google_since
FROM devices d LEFT JOIN (
    SELECT device_id, min(least(first_active_day, (first_seen_at AT TIME ZONE $1)::date)) AS since
    FROM google_devices WHERE device_id IS NOT NULL GROUP BY device_id) g ON g.device_id = d.id;

-- name: daily_usage_since
SELECT device_id, day, active_s, external_display_s, projector_on_s, modem_bytes, active_in_hours_s,
       external_display_in_hours_s, projector_on_in_hours_s, modem_in_hours_bytes, modem_connected_s
FROM daily_usage WHERE day >= $1;

-- name: device_flags_insert
INSERT INTO device_flags (device_id, silent, low_use, verdict, used_days, judged_days, missed_days, silent_since,
                          judged_from, out_of_hours_days, device_days, google_days)
SELECT * FROM unnest($1::uuid[], $2::bool[], $3::bool[], $4::text[], $5::int[], $6::int[], $7::int[], $8::date[],
                     $9::date[], $10::int[], $11::int[], $12::int[]);

-- name: fleet_snapshot_set
INSERT INTO fleet_snapshot (computed_at, body) VALUES (now(), $1::jsonb)
ON CONFLICT (id) DO UPDATE SET computed_at = excluded.computed_at, body = excluded.body;

-- name: fleet_snapshot_get
SELECT extract(epoch FROM computed_at) AS computed_at, body::text AS body FROM fleet_snapshot;

-- name: last_record_day
-- Each device's last local day with records, or with a figure from Google, or on which it last
-- synced with Google ($2 = the time zone), up to $1.
SELECT device_id, max(day) AS day FROM (
    SELECT device_id, day FROM daily_usage WHERE (records > 0 OR active_source = 'google') AND day <= $1
    UNION ALL
    SELECT device_id, least((last_sync AT TIME ZONE $2)::date, $1) FROM google_devices
    WHERE device_id IS NOT NULL AND last_sync IS NOT NULL
) x GROUP BY device_id;

-- name: daily_sources_since
-- The days since $1 of each device whose active time came from its own records, and from Google.
SELECT device_id, array_agg(day) FILTER (WHERE active_source = 'device') AS device_days,
       array_agg(day) FILTER (WHERE active_source = 'google') AS google_days
FROM daily_usage WHERE day >= $1 AND active_source <> 'none' GROUP BY device_id;

-- name: spool_dropped_by_device
-- Records the agents' spools had to drop, and records missing from their sequences (gaps), per
-- device (every spool it ever had).
SELECT device_id, sum(dropped)::bigint AS dropped, sum(gaps)::bigint AS gaps FROM device_spools GROUP BY device_id;

-- name: spool_gaps_update
-- Count the seqs of each spool that never arrived ($1: the grace, in seconds). Seqs arrive late
-- and out of order (a backlog, a resend, a corrupt spool's records sent from its successor),
-- so a seq is counted missing only once a higher seq of its spool has been in the database for
-- the grace at least: each check remembers the highest seq seen, and a check a grace or more
-- old makes that the settled line. A spool is checked at most once per grace, so the line
-- trails the newest seq by one to two graces. Below it, the holes less the records the agent
-- says it dropped (a dropped record leaves a hole, whether from the head of a full spool or
-- refused by a full disk) are the gaps. Recomputed at each check: a late seq closes its gap.
WITH due AS (
    SELECT device_id, spool,
           CASE WHEN gap_check_at IS NULL THEN settled_high ELSE greatest(settled_high, gap_check_high) END AS line
    FROM device_spools
    WHERE gap_check_at IS NULL OR gap_check_at <= now() - make_interval(secs => $1)
    -- Locked in key order, as writer flushes upsert spools (flush_devices): taken in any other
    -- order, this check and a flush could each hold a spool the other waits for (deadlock).
    -- A spool row another transaction holds is skipped, and checked at the next run: waiting
    -- for it, this statement held every spool row before it, and the writer's flushes of all
    -- those devices waited behind it (answered 503 as held).
    ORDER BY device_id, spool
    FOR UPDATE SKIP LOCKED
)
UPDATE device_spools s
SET settled_high = due.line,
    gap_check_high = coalesce(upper(s.seqs) - 1, 0),
    gap_check_at = now(),
    gaps = greatest(0, due.line - s.dropped - coalesce(
        (SELECT sum(upper(r) - lower(r)) FROM unnest(s.seqs * int8multirange(int8range(1, due.line + 1))) AS r), 0))
FROM due
WHERE s.device_id = due.device_id AND s.spool = due.spool;

-- name: report_schools
-- The schools of an evidence report: one ($1), or all (NULL).
SELECT uai, name, zone, timetable FROM schools WHERE ($1::text IS NULL OR uai = $1) ORDER BY uai;

-- name: report_devices
-- The inventory of an evidence report's schools ($1 a school, NULL all), every status and kind:
-- the report decides what counts (collector/tice_collector/report/compute.py).
SELECT d.id, d.serial, d.kind, d.school, d.class_id, c.code AS class, d.status, d.enrolled_at, d.created_at
FROM devices d LEFT JOIN classes c ON c.id = d.class_id
WHERE ($1::text IS NULL OR d.school = $1)
ORDER BY d.school, d.kind, d.serial;

-- name: report_daily
-- Each device's daily totals from $1 to $2 (school $3, NULL all): one row per device, its days
-- and figures as arrays in day order (a city's school year is a few thousand rows, not several
-- hundred thousand; the primary key gives them in order, so nothing is sorted). The calendar
-- decides in the collector which days were school days.
SELECT u.device_id, array_agg(u.day ORDER BY u.day) AS days,
       array_agg(u.active_in_hours_s ORDER BY u.day) AS active_in_hours_s,
       array_agg(u.external_display_in_hours_s ORDER BY u.day) AS external_display_in_hours_s,
       array_agg(u.projector_on_in_hours_s ORDER BY u.day) AS projector_on_in_hours_s,
       array_agg(u.modem_in_hours_bytes ORDER BY u.day) AS modem_in_hours_bytes,
       array_agg(u.projector_on_s ORDER BY u.day) AS projector_on_s,
       array_agg(u.modem_bytes ORDER BY u.day) AS modem_bytes
FROM daily_usage u JOIN devices d ON d.id = u.device_id
WHERE u.day BETWEEN $1 AND $2 AND ($3::text IS NULL OR d.school = $3)
GROUP BY u.device_id;

-- name: report_last_data_day
-- Each device's last day with data up to $1 (school $2, NULL all): one index probe per device.
SELECT d.id AS device_id, l.day
FROM devices d CROSS JOIN LATERAL (
    SELECT u.day FROM daily_usage u WHERE u.device_id = d.id AND u.day <= $1 ORDER BY u.day DESC LIMIT 1) l
WHERE ($2::text IS NULL OR d.school = $2);

-- name: google_match
-- The inventory device of each serial Google lists ($1, normalised): a Chromebook first, should
-- a serial name devices of several kinds (a ChromeOS Flex laptop may be inventoried as a laptop).
SELECT DISTINCT ON (serial) id, serial, kind, school, status FROM devices
WHERE serial = ANY($1::text[])
ORDER BY serial, (kind = 'chromebook') DESC, created_at;

-- name: google_devices_upsert
-- What the latest sync ($18, its start) read of each Chromebook; device_id NULL: unknown serial.
INSERT INTO google_devices AS g (google_id, serial, device_id, status, org_unit_path, asset_id, model, os_version,
                                 auto_update_through, last_sync, cpu_utilization_ratio, cpu_temperature_c,
                                 ram_total_bytes, ram_free_bytes, disk_total_bytes, disk_free_bytes,
                                 first_active_day, first_seen_at, last_seen_at)
SELECT *, $18::timestamptz, $18::timestamptz
FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::timestamptz[], $10::timestamptz[], $11::float8[], $12::float8[], $13::bigint[], $14::bigint[],
            $15::bigint[], $16::bigint[], $17::date[])
ON CONFLICT (google_id) DO UPDATE SET
    serial = excluded.serial, device_id = excluded.device_id, status = excluded.status,
    org_unit_path = excluded.org_unit_path, asset_id = excluded.asset_id, model = excluded.model,
    os_version = excluded.os_version, auto_update_through = excluded.auto_update_through,
    last_sync = excluded.last_sync, cpu_utilization_ratio = excluded.cpu_utilization_ratio,
    cpu_temperature_c = excluded.cpu_temperature_c, ram_total_bytes = excluded.ram_total_bytes,
    ram_free_bytes = excluded.ram_free_bytes, disk_total_bytes = excluded.disk_total_bytes,
    disk_free_bytes = excluded.disk_free_bytes,
    first_active_day = least(g.first_active_day, excluded.first_active_day),
    last_seen_at = excluded.last_seen_at;

-- name: google_devices_seen
-- A Chromebook Google lists was last heard of at its last policy sync with Google (lastSync):
-- for the inventory devices this sync ($1, its start) matched, that is when they were last seen,
-- whether or not they run the extension (never later than now: Google's clock is not ours).
-- Their rows are locked in id order first, as the writer locks them (devices_lock), so a sync
-- and a flush never wait on each other in a circle.
WITH seen AS (
    SELECT device_id, least(max(last_sync), now()) AS at FROM google_devices
    WHERE last_seen_at = $1 AND device_id IS NOT NULL AND last_sync IS NOT NULL
    GROUP BY device_id
), locked AS (
    SELECT d.id, s.at FROM devices d JOIN seen s ON s.device_id = d.id
    WHERE d.last_seen_at IS NULL OR d.last_seen_at < s.at
    ORDER BY d.id FOR UPDATE OF d
)
UPDATE devices d SET last_seen_at = l.at FROM locked l WHERE d.id = l.id;

-- name: google_daily_upsert
-- Google's active milliseconds per (device, day); the rows new or changed come back, so only
-- their days are recomputed.
INSERT INTO google_daily_usage AS g (device_id, day, active_ms, synced_at)
SELECT *, now() FROM unnest($1::uuid[], $2::date[], $3::bigint[])
ON CONFLICT (device_id, day) DO UPDATE SET active_ms = excluded.active_ms, synced_at = excluded.synced_at
WHERE g.active_ms IS DISTINCT FROM excluded.active_ms
RETURNING device_id, day;

-- name: google_pairs
-- The (device, day, school) pairs to recompute, as rollup_upsert takes them.
SELECT p.device_id, p.day, d.school FROM unnest($1::uuid[], $2::date[]) AS p(device_id, day)
JOIN devices d ON d.id = p.device_id;

-- name: google_sync_ok
UPDATE google_sync_state SET last_attempt_at = $1, last_success_at = $1, last_error = NULL, devices_seen = $2,
    devices_matched = $3, unknown_serials = $4, quota_retries = quota_retries + $5,
    implausible_days = implausible_days + $6;

-- name: google_sync_failed
UPDATE google_sync_state SET last_attempt_at = $1, last_error = $2, quota_retries = quota_retries + $3;

-- name: google_sync_state
SELECT extract(epoch FROM last_attempt_at) AS last_attempt, extract(epoch FROM last_success_at) AS last_success,
       last_error, devices_seen, devices_matched, unknown_serials, quota_retries, implausible_days
FROM google_sync_state;

-- name: google_unknown
-- The Chromebooks of the latest sync whose serial the inventory does not know.
SELECT serial, status, org_unit_path, model, asset_id, last_sync FROM google_devices
WHERE device_id IS NULL AND last_seen_at = (SELECT max(last_seen_at) FROM google_devices)
ORDER BY org_unit_path, serial;

-- name: google_link
-- Link the Google rows of a serial to the device just added to the inventory for it.
UPDATE google_devices SET device_id = $2 WHERE serial = $1 AND device_id IS NULL;

-- name: google_expiry
-- The auto-update expiry of every Chromebook Google listed in the latest sync, with the school
-- of its inventory device (NULL: an unknown serial).
SELECT g.model, extract(epoch FROM g.auto_update_through) AS aue, d.school, g.org_unit_path
FROM google_devices g LEFT JOIN devices d ON d.id = g.device_id
WHERE g.last_seen_at = (SELECT max(last_seen_at) FROM google_devices)
  AND coalesce(d.status, 'active') = 'active';

-- name: device_insert_inventory
-- A device added by an admin, known from the inventory until it enrols (if it ever does).
INSERT INTO devices (serial, kind, school) VALUES ($1, $2, $3) RETURNING id;

-- name: device_days
-- One device's daily active time since $2, with the source of each day.
SELECT day, active_s, active_in_hours_s, active_source, google_active_s FROM daily_usage
WHERE device_id = $1 AND day >= $2 ORDER BY day;

-- name: google_daily_prune
DELETE FROM google_daily_usage WHERE day < $1;

-- name: peripherals_latest
-- Every active peripheral with its host, its last connection and its latest reading from any
-- host (by reading time: `at` plus the interval it closes): a 3G key's state and signal, a
-- projector's power, lamp and errors; a backup disk's health and space from the last reading in
-- which it was plugged in. One index probe per peripheral (identity, time).
SELECT d.id, d.serial AS peripheral, d.kind, d.school, p.host_id, p.last_connected_at,
       m.taken AS modem_at, m.up AS modem_up, m.state, m.technology, m.rsrp_dbm, m.rssi_dbm,
       j.taken AS projector_at, j.up AS projector_up, j.power, j.lamp_hours,
       j.fan, j.lamp, j.temperature, j.cover, j.filter, j.other,
       k.smart_ok, k.free_bytes, k.total_bytes
FROM peripherals p JOIN devices d ON d.id = p.device_id
LEFT JOIN LATERAL (
    SELECT r.at_corrected + make_interval(secs => coalesce(r.duration_s, 0)) AS taken, r.up, r.state, r.technology,
           r.rsrp_dbm, r.rssi_dbm
    FROM modem_records r WHERE d.kind = 'modem' AND r.modem_id = d.serial
    ORDER BY r.at_corrected DESC LIMIT 1) m ON true
LEFT JOIN LATERAL (
    SELECT r.at_corrected + make_interval(secs => coalesce(r.duration_s, 0)) AS taken, r.up, r.power, r.lamp_hours,
           r.fan, r.lamp, r.temperature, r.cover, r.filter, r.other
    FROM projector_records r WHERE d.kind = 'projector' AND r.projector_id = d.serial
    ORDER BY r.at_corrected DESC LIMIT 1) j ON true
LEFT JOIN LATERAL (
    SELECT r.smart_ok, r.free_bytes, r.total_bytes
    FROM disk_records r WHERE d.kind = 'disk' AND r.disk_id = d.serial AND r.present
     AND r.at_corrected >= p.last_connected_at - interval '1 day'
    ORDER BY r.at_corrected DESC LIMIT 1) k ON true
WHERE d.status = 'active'
ORDER BY d.school, d.kind, d.serial;

-- name: modem_bytes_since
-- Bytes carried by each 3G key $2 (device ids) from local day $1 on, from its daily rows.
SELECT device_id, sum(modem_bytes)::bigint AS bytes FROM daily_usage
WHERE device_id = ANY($2::uuid[]) AND day >= $1 GROUP BY device_id;

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

-- name: ping
-- The connection is still there.
SELECT 1;

-- name: database_exists
-- On the maintenance database: whether database $1 exists.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1);

-- name: school_codes
SELECT uai FROM schools;

-- name: school_count
SELECT count(*) FROM schools;

-- name: school_timetable
SELECT timetable FROM schools WHERE uai = $1;

-- name: school_calendar
SELECT uai, zone, timetable FROM schools WHERE uai = $1;

-- name: schools_calendar
SELECT uai, zone, timetable FROM schools;

-- name: calendar_override_set
-- One closed or open day ($3) for school $1 (NULL: every school) on day $2, from source $5
-- (manual, ics); a day set again is replaced, whatever set it before.
INSERT INTO calendar_overrides (school, day, kind, label, source) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (coalesce(school, ''), day) DO UPDATE
SET kind = excluded.kind, label = excluded.label, source = excluded.source;

-- name: calendar_overrides_list
-- The overrides that apply to school $1 (its own and the city's), or all of them when $1 is NULL.
SELECT school, day, kind, source, label FROM calendar_overrides
WHERE ($1::text IS NULL OR school = $1 OR school IS NULL) ORDER BY day, school;

-- name: device_flags_all
SELECT * FROM device_flags;

-- name: device_flags_clear
DELETE FROM device_flags;

-- name: device_place
-- The demo's devices: enrolled at $2, in class $3.
UPDATE devices SET enrolled_at = $2, class_id = $3 WHERE id = $1;

-- name: google_devices_count
SELECT count(*) FROM google_devices;

-- name: job_lock
-- Jobs' advisory locks: key space $1 (JOB_LOCK_SPACE), the job's own key $2.
SELECT pg_advisory_lock($1, $2);

-- name: job_try_lock
SELECT pg_try_advisory_lock($1, $2);

-- name: job_unlock
SELECT pg_advisory_unlock($1, $2);

-- name: job_lock_xact
-- Held until the transaction ends.
SELECT pg_advisory_xact_lock($1, $2);

-- name: job_last_detail
-- What the latest run of job $1 said.
SELECT detail FROM job_runs WHERE job = $1 ORDER BY started_at DESC LIMIT 1;
