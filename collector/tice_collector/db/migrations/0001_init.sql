-- Tice Telemetry: initial schema.
-- Why it looks like this: collector/db/README.md.

CREATE TABLE schools (
    uai         text PRIMARY KEY CHECK (uai ~ '^[0-9]{7}[A-Z]$'),  -- official school code (UAI/RNE)
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    zone        text NOT NULL CHECK (zone IN ('A', 'B', 'C')),     -- school-holiday zone
    kind        text NOT NULL CHECK (kind IN ('nursery', 'elementary', 'primary')),
    timetable   text NOT NULL DEFAULT 'four_day'
                CHECK (timetable IN ('four_day', 'wednesday_morning')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE classes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    school      text NOT NULL REFERENCES schools (uai),
    code        text NOT NULL CHECK (length(code) BETWEEN 1 AND 64),  -- e.g. "CP-A"
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (school, code)
);

CREATE TABLE devices (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    serial         text NOT NULL CHECK (length(serial) BETWEEN 1 AND 64),
    kind           text NOT NULL CHECK (kind IN ('chromebook', 'laptop', 'desktop', 'projector',
                                                 'modem', 'disk', 'other')),
    school         text NOT NULL REFERENCES schools (uai),
    class_id       bigint REFERENCES classes (id),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    enrolled_at    timestamptz,          -- NULL: known from the inventory, never enrolled
    last_seen_at   timestamptz,          -- last committed report (server clock)
    agent_version  text,
    UNIQUE (serial, kind)
);
CREATE INDEX devices_school_idx ON devices (school, kind);

-- One row per enrol secret; only the SHA-256 of the secret is stored.
CREATE TABLE enroll_secrets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    school      text NOT NULL REFERENCES schools (uai),
    digest      bytea NOT NULL UNIQUE,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    last_used_at timestamptz
);

-- Device bearer tokens; only the SHA-256 of the token is stored, looked up by digest.
CREATE TABLE device_tokens (
    digest      bytea PRIMARY KEY,
    device_id   uuid NOT NULL REFERENCES devices (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX device_tokens_device_idx ON device_tokens (device_id);

-- Each agent spool's running count of records it had to drop (its bound was reached).
CREATE TABLE device_spools (
    device_id     uuid NOT NULL REFERENCES devices (id),
    spool         uuid NOT NULL,
    dropped       bigint NOT NULL DEFAULT 0,
    last_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (device_id, spool)
);

-- Raw records: one typed wide row per record, range-partitioned by month on the device's
-- own clock as sent (a resend repeats it exactly, so the unique key can include it).
-- The DEFAULT partition catches device clocks far outside the months that have a partition.

CREATE TABLE usage_records (
    device_id     uuid        NOT NULL,
    spool         uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,  -- device clock, exactly as sent: the partition key
    at_corrected  timestamptz NOT NULL,  -- device clock corrected for skew: what analytics use
    received_at   timestamptz NOT NULL,
    duration_s    double precision NOT NULL,
    active_s      double precision NOT NULL,
    idle_s        double precision NOT NULL,
    locked_s      double precision NOT NULL,
    no_session_s  double precision NOT NULL,
    source        text NOT NULL,
    PRIMARY KEY (device_id, spool, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;

CREATE TABLE health_records (
    device_id     uuid        NOT NULL,
    spool         uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,  -- device clock, exactly as sent: the partition key
    at_corrected  timestamptz NOT NULL,  -- device clock corrected for skew: what analytics use
    received_at   timestamptz NOT NULL,
    cpu_load_ratio       double precision,
    memory_used_ratio    double precision,
    disk_free_bytes      bigint,
    disk_total_bytes     bigint,
    battery_ratio        double precision,
    battery_plugged      boolean,
    battery_health_ratio double precision,
    uptime_s             double precision,
    boot_at              timestamptz,
    PRIMARY KEY (device_id, spool, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE health_records_default PARTITION OF health_records DEFAULT;

CREATE TABLE link_records (
    device_id     uuid        NOT NULL,
    spool         uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,  -- device clock, exactly as sent: the partition key
    at_corrected  timestamptz NOT NULL,  -- device clock corrected for skew: what analytics use
    received_at   timestamptz NOT NULL,
    interface            text NOT NULL,
    link_up              boolean NOT NULL,
    collector_reachable  boolean,
    rtt_s                double precision,
    dns_ok               boolean,
    PRIMARY KEY (device_id, spool, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE link_records_default PARTITION OF link_records DEFAULT;

CREATE TABLE modem_records (
    device_id     uuid        NOT NULL,
    spool         uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,  -- device clock, exactly as sent: the partition key
    at_corrected  timestamptz NOT NULL,  -- device clock corrected for skew: what analytics use
    received_at   timestamptz NOT NULL,
    up            boolean NOT NULL,
    state         text NOT NULL,
    technology    text,
    signal_ratio  double precision,
    rssi_dbm      double precision,
    rsrp_dbm      double precision,
    roaming       boolean,
    rx_bytes      bigint,
    tx_bytes      bigint,
    connected_s   double precision,
    duration_s    double precision,
    PRIMARY KEY (device_id, spool, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE modem_records_default PARTITION OF modem_records DEFAULT;

CREATE TABLE projector_records (
    device_id     uuid        NOT NULL,
    spool         uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,  -- device clock, exactly as sent: the partition key
    at_corrected  timestamptz NOT NULL,  -- device clock corrected for skew: what analytics use
    received_at   timestamptz NOT NULL,
    up            boolean NOT NULL,
    power         text NOT NULL,
    lamp_hours    integer,
    lamp_on       boolean,
    fan           text,
    lamp          text,
    temperature   text,
    cover         text,
    filter        text,
    other         text,
    PRIMARY KEY (device_id, spool, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE projector_records_default PARTITION OF projector_records DEFAULT;

CREATE TABLE display_records (
    device_id     uuid        NOT NULL,
    spool         uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,  -- device clock, exactly as sent: the partition key
    at_corrected  timestamptz NOT NULL,  -- device clock corrected for skew: what analytics use
    received_at   timestamptz NOT NULL,
    duration_s          double precision NOT NULL,
    external_s          double precision NOT NULL,
    external_connected  boolean NOT NULL,
    displays            integer NOT NULL,
    PRIMARY KEY (device_id, spool, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE display_records_default PARTITION OF display_records DEFAULT;

CREATE TABLE disk_records (
    device_id     uuid        NOT NULL,
    spool         uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,  -- device clock, exactly as sent: the partition key
    at_corrected  timestamptz NOT NULL,  -- device clock corrected for skew: what analytics use
    received_at   timestamptz NOT NULL,
    present         boolean NOT NULL,
    free_bytes      bigint,
    total_bytes     bigint,
    smart_ok        boolean,
    temperature_c   double precision,
    power_on_hours  bigint,
    last_backup_at  timestamptz,
    PRIMARY KEY (device_id, spool, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE disk_records_default PARTITION OF disk_records DEFAULT;

CREATE TABLE probe_records (
    device_id     uuid        NOT NULL,
    spool         uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,  -- device clock, exactly as sent: the partition key
    at_corrected  timestamptz NOT NULL,  -- device clock corrected for skew: what analytics use
    received_at   timestamptz NOT NULL,
    probe       text NOT NULL,
    ok          boolean NOT NULL,
    duration_s  double precision NOT NULL,
    error       text,
    PRIMARY KEY (device_id, spool, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE probe_records_default PARTITION OF probe_records DEFAULT;

-- Create the monthly partitions of every raw table for [from_month, to_month].
-- Rows already in a DEFAULT partition that belong to a new month are moved into it, so a
-- device whose clock ran ahead never blocks creating that month later.
CREATE FUNCTION tice_ensure_partitions(from_month date, to_month date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    parent text;
    month date;
    part text;
    created integer := 0;
BEGIN
    -- Replicas starting together would otherwise deadlock creating the same partitions.
    PERFORM pg_advisory_xact_lock(1952672101, 1);
    FOR parent IN SELECT unnest(ARRAY['usage_records', 'health_records', 'link_records',
        'modem_records', 'projector_records', 'display_records', 'disk_records', 'probe_records'])
    LOOP
        month := date_trunc('month', from_month)::date;
        WHILE month <= to_month LOOP
            part := format('%s_%s', parent, to_char(month, 'YYYYMM'));
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TEMP TABLE tice_moving ON COMMIT DROP AS '
                               'SELECT * FROM %I WHERE at >= %L AND at < %L',
                               parent || '_default', month, (month + interval '1 month')::date);
                EXECUTE format('DELETE FROM %I WHERE at >= %L AND at < %L',
                               parent || '_default', month, (month + interval '1 month')::date);
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               part, parent, month, (month + interval '1 month')::date);
                EXECUTE format('INSERT INTO %I SELECT * FROM tice_moving', parent);
                DROP TABLE tice_moving;
                created := created + 1;
            END IF;
            month := (month + interval '1 month')::date;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;
