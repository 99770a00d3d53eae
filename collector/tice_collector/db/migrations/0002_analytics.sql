-- Analytics: daily rollups, calendar overrides, job bookkeeping, fleet snapshot.

-- Projector records carry the interval they cover, so lamp-on time can be summed.
ALTER TABLE projector_records ADD COLUMN duration_s double precision;

-- The rollup reads one device's records for one local day, by corrected time.
CREATE INDEX usage_records_device_time_idx ON usage_records (device_id, at_corrected);
CREATE INDEX display_records_device_time_idx ON display_records (device_id, at_corrected);
CREATE INDEX modem_records_device_time_idx ON modem_records (device_id, at_corrected);
CREATE INDEX projector_records_device_time_idx ON projector_records (device_id, at_corrected);

-- Late records are found by arrival time; BRIN is tiny and cheap to keep because rows
-- arrive roughly in received_at order.
CREATE INDEX usage_records_received_brin ON usage_records USING brin (received_at);
CREATE INDEX display_records_received_brin ON display_records USING brin (received_at);
CREATE INDEX modem_records_received_brin ON modem_records USING brin (received_at);
CREATE INDEX projector_records_received_brin ON projector_records USING brin (received_at);

-- One row per device and local calendar day (the school's time zone), recomputed whole
-- from the raw records whenever records for that day arrive, however late. Kept for years.
CREATE TABLE daily_usage (
    device_id          uuid NOT NULL REFERENCES devices (id),
    day                date NOT NULL,
    active_s           double precision NOT NULL DEFAULT 0,  -- user input during the day
    external_display_s double precision NOT NULL DEFAULT 0,  -- a projector/screen plugged in
    projector_on_s     double precision NOT NULL DEFAULT 0,  -- networked projector lamp on
    modem_bytes        bigint NOT NULL DEFAULT 0,            -- 3G key traffic
    first_active_at    timestamptz,
    last_active_at     timestamptz,
    records            integer NOT NULL DEFAULT 0,
    computed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, day)
);
CREATE INDEX daily_usage_day_idx ON daily_usage (day);

-- School-calendar corrections: closures and extra days, per school or city-wide (school NULL).
CREATE TABLE calendar_overrides (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    school  text REFERENCES schools (uai),
    day     date NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('closed', 'open')),
    label   text NOT NULL DEFAULT '',
    source  text NOT NULL DEFAULT 'manual'
);
CREATE UNIQUE INDEX calendar_overrides_day_idx ON calendar_overrides (coalesce(school, ''), day);

-- Scheduled jobs: one row per (job, slot). The INSERT that claims a slot is what makes a job
-- run once per schedule across replicas.
CREATE TABLE job_runs (
    job          text NOT NULL,
    slot         timestamptz NOT NULL,
    runner       text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    ok           boolean,
    detail       text,
    PRIMARY KEY (job, slot)
);

-- Progress of the incremental rollup: records received up to here have been rolled up.
CREATE TABLE rollup_state (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    watermark   timestamptz NOT NULL
);
INSERT INTO rollup_state (watermark) VALUES ('2000-01-01T00:00:00Z');

-- Per-device verdicts written by the detection job.
CREATE TABLE device_flags (
    device_id     uuid PRIMARY KEY REFERENCES devices (id),
    silent        boolean NOT NULL,
    low_use       boolean NOT NULL,
    verdict       text NOT NULL CHECK (verdict IN ('regular', 'irregular', 'too_new')),
    used_days     integer NOT NULL,
    judged_days   integer NOT NULL,
    missed_days   integer NOT NULL,   -- completed school days without a report
    silent_since  date,
    computed_at   timestamptz NOT NULL DEFAULT now()
);

-- The fleet figures every replica exports: written by one replica, read by all.
CREATE TABLE fleet_snapshot (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    computed_at  timestamptz NOT NULL,
    body         jsonb NOT NULL
);
