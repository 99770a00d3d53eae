-- Devices whose identity two agents share: laptops cloned from one disk image (same serial or
-- same credentials), a serial shared by mistake, two installs on one machine. Each such agent
-- takes the other's data and, at each enrolment, its token.

-- When each spool first reported, so that two spools of one device reporting in the same
-- period can be told from a spool that replaced another (rows already there: unknown, so the
-- last time seen stands for it).
ALTER TABLE device_spools ADD COLUMN first_seen_at timestamptz;
UPDATE device_spools SET first_seen_at = last_seen_at;
ALTER TABLE device_spools ALTER COLUMN first_seen_at SET DEFAULT now();
ALTER TABLE device_spools ALTER COLUMN first_seen_at SET NOT NULL;

-- One row per device seen in use by two agents at once; kept, so the evidence can show it.
CREATE TABLE device_identity_conflicts (
    device_id               uuid PRIMARY KEY REFERENCES devices (id),
    first_seen_at           timestamptz NOT NULL,
    last_seen_at            timestamptz NOT NULL,
    -- Reports made with the credentials of an earlier enrolment, which a later one replaced.
    earlier_enrolment_uses  bigint NOT NULL DEFAULT 0,
    -- The most spools of the device seen reporting in the same period.
    spools_at_once          integer NOT NULL DEFAULT 0,
    -- When the warning naming the device was last logged (once an hour at most).
    logged_at               timestamptz
);
