-- Enrolment keeps a device's identity and history.

-- How many devices each enrol secret has created, so a secret can be capped
-- (enroll_secret_max_devices): a leaked secret cannot flood the inventory.
ALTER TABLE enroll_secrets ADD COLUMN devices_created integer NOT NULL DEFAULT 0;

-- enrolled_at is when the device was first enrolled. Re-enrolment used to reset it to now;
-- the first token a device ever received tells the real date (tokens are revoked, never deleted).
UPDATE devices d SET enrolled_at = t.first_at
FROM (SELECT device_id, min(created_at) AS first_at FROM device_tokens GROUP BY device_id) t
WHERE t.device_id = d.id AND (d.enrolled_at IS NULL OR t.first_at < d.enrolled_at);

-- One spelling per serial: trimmed, upper case (collector/serials.py). A row whose normal
-- spelling another row of the same kind already has, or would get, keeps its spelling: an
-- admin merges those by hand.
WITH spelled AS (
    SELECT id, kind, upper(btrim(serial)) AS normal,
           count(*) OVER (PARTITION BY kind, upper(btrim(serial))) AS n
    FROM devices
)
UPDATE devices d SET serial = s.normal
FROM spelled s
WHERE s.id = d.id AND s.n = 1 AND d.serial <> s.normal AND s.normal <> '';
