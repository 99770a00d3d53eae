-- Peripherals (3G keys, projectors, backup disks): their identities and the readings the
-- agent's hilink, modemmanager, pjlink and disk probes send. Raw storage only: daily rollups
-- and fleet metrics of peripherals come later.

-- The deployment's secret for peripheral identities (wire.PeripheralId): agents receive it at
-- enrolment and hash IMEIs and disk serials with it, so the same key has the same id on every
-- agent while the ids cannot be reversed without this row. Generated once, here:
-- gen_random_uuid() draws from the server's strong random source (two of them give 244
-- random bits). Losing it (restoring the schema without this table) changes every id.
CREATE TABLE peripheral_identity (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    salt  text NOT NULL CHECK (salt ~ '^[0-9a-f]{64}$')
);
INSERT INTO peripheral_identity (salt)
VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

-- 3G/4G keys. rx_bytes, tx_bytes, connected_s and duration_s keep their meaning (the interval);
-- the session_* and total_* columns are the key's own counters.
ALTER TABLE modem_records
    ADD COLUMN modem_id           text,
    ADD COLUMN bars               smallint,
    ADD COLUMN rsrq_db            double precision,
    ADD COLUMN sinr_db            double precision,
    ADD COLUMN plmn               text,
    ADD COLUMN session_s          double precision,
    ADD COLUMN session_rx_bytes   bigint,
    ADD COLUMN session_tx_bytes   bigint,
    ADD COLUMN total_connected_s  double precision,
    ADD COLUMN total_rx_bytes     bigint,
    ADD COLUMN total_tx_bytes     bigint;

-- Projectors: per-lamp hours and state (up to eight lamps), input, name, make, PJLink class.
ALTER TABLE projector_records
    ADD COLUMN projector_id  text,
    ADD COLUMN lamps_hours   integer[],
    ADD COLUMN lamps_on      boolean[],
    ADD COLUMN input_kind    text,
    ADD COLUMN input_number  smallint,
    ADD COLUMN name          text,
    ADD COLUMN manufacturer  text,
    ADD COLUMN model         text,
    ADD COLUMN pjlink_class  smallint;

ALTER TABLE disk_records
    ADD COLUMN disk_id            text,
    ADD COLUMN last_connected_at  timestamptz;
