-- The Google Admin connector (docs/chromebooks.md): what Google's Directory API says about each
-- managed Chromebook, its per-day active time, and how the two sources of a device-day combine.
-- Device-level facts only: no user, e-mail, location, note or network address is stored.

-- One row per Chromebook Google manages (its Directory API deviceId), matched by serial number
-- to a device of the inventory (device_id NULL: a serial the inventory does not know).
CREATE TABLE google_devices (
    google_id            text PRIMARY KEY CHECK (length(google_id) BETWEEN 1 AND 200),
    serial               text NOT NULL CHECK (length(serial) BETWEEN 1 AND 64),  -- normalised
    device_id            uuid REFERENCES devices (id),
    status               text,                 -- ACTIVE, DEPROVISIONED, DISABLED, ...
    org_unit_path        text,
    asset_id             text,                 -- annotatedAssetId: the city's asset tag
    model                text,
    os_version           text,
    auto_update_through  timestamptz,          -- after this the model gets no more updates
    last_sync            timestamptz,          -- the device's last policy sync with Google
    cpu_utilization_ratio double precision,    -- latest CPU status report, 0..1
    cpu_temperature_c    double precision,
    ram_total_bytes      bigint,
    ram_free_bytes       bigint,               -- latest RAM report
    disk_total_bytes     bigint,
    disk_free_bytes      bigint,
    first_seen_at        timestamptz NOT NULL DEFAULT now(),  -- first sync that listed it
    last_seen_at         timestamptz NOT NULL DEFAULT now(),  -- latest sync that listed it
    first_active_day     date                  -- earliest day Google ever gave active time for
);
CREATE INDEX google_devices_device_idx ON google_devices (device_id);
CREATE INDEX google_devices_serial_idx ON google_devices (serial);

-- Google's active time per matched device and local day (activeTimeRanges: milliseconds).
-- A daily total with no time of day: collector/db/queries.sql rollup_upsert combines it with
-- the device's own records.
CREATE TABLE google_daily_usage (
    device_id  uuid NOT NULL REFERENCES devices (id),
    day        date NOT NULL,
    active_ms  bigint NOT NULL CHECK (active_ms BETWEEN 0 AND 90000000),
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, day)
);

-- Where each device-day's active time came from: "device" (the device's own usage records,
-- the Chrome extension or the agent, taken that day), "google" (no such record: Google's
-- daily total), "none" (neither). google_active_s is Google's figure, shown beside the other.
ALTER TABLE daily_usage
    ADD COLUMN active_source text NOT NULL DEFAULT 'device' CHECK (active_source IN ('device', 'google', 'none')),
    ADD COLUMN google_active_s double precision;
UPDATE daily_usage SET active_source = 'none' WHERE records = 0;

-- Verdicts: how many of the judged school days were known from the device's records, and how
-- many from Google's daily total alone.
ALTER TABLE device_flags
    ADD COLUMN device_days integer NOT NULL DEFAULT 0,
    ADD COLUMN google_days integer NOT NULL DEFAULT 0;

-- The connector's health, one row: what /metrics shows on every replica.
CREATE TABLE google_sync_state (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_attempt_at    timestamptz,
    last_success_at    timestamptz,
    last_error         text,
    devices_seen       integer NOT NULL DEFAULT 0,
    devices_matched    integer NOT NULL DEFAULT 0,
    unknown_serials    integer NOT NULL DEFAULT 0,
    quota_retries      bigint NOT NULL DEFAULT 0,  -- cumulative
    implausible_days   bigint NOT NULL DEFAULT 0   -- cumulative: daily figures refused
);
INSERT INTO google_sync_state DEFAULT VALUES;
