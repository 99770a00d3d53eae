-- Peripherals (3G keys, projectors, backup disks) become devices of their own: registered by the
-- rollup job on first sight of their identity, attached to the school of the host that reported
-- them last, rolled up per day, judged and exported (docs/peripherals.md).

-- A peripheral is a devices row (kind modem, projector or disk; serial = its PeripheralId) with
-- one row here: the host that reported it last, and the peripheral's last connection.
--   host_id            the device whose agent sent the latest reading (by reading time)
--   host_seen_at       that reading's time (device clock, corrected)
--   last_connected_at  the last reading in which it answered (key up, projector up with a known
--                      power state, disk present), or the last connection a disk's agent
--                      remembers; kept when the raw readings expire
CREATE TABLE peripherals (
    device_id          uuid PRIMARY KEY REFERENCES devices (id),
    host_id            uuid NOT NULL REFERENCES devices (id),
    host_seen_at       timestamptz NOT NULL,
    last_connected_at  timestamptz
);
CREATE INDEX peripherals_host_idx ON peripherals (host_id);

-- The rollup and the snapshot read a peripheral's readings by its identity, whichever host sent
-- them. Partial: readings without an identity stay readings of their host.
CREATE INDEX modem_records_modem_time_idx ON modem_records (modem_id, at_corrected)
    WHERE modem_id IS NOT NULL;
CREATE INDEX projector_records_projector_time_idx ON projector_records (projector_id, at_corrected)
    WHERE projector_id IS NOT NULL;
CREATE INDEX disk_records_disk_time_idx ON disk_records (disk_id, at_corrected)
    WHERE disk_id IS NOT NULL;
CREATE INDEX disk_records_received_brin ON disk_records USING brin (received_at);

-- A 3G key's connected time in the day (merged on the time axis like its bytes).
ALTER TABLE daily_usage ADD COLUMN modem_connected_s double precision NOT NULL DEFAULT 0;

-- Readings with an identity stored before peripherals were devices were rolled up onto their
-- host: the next rollup registers their peripherals and recomputes the days of the last 120
-- days (what verdicts read) for hosts and peripherals alike.
UPDATE rollup_state SET watermark = least(watermark, now() - interval '120 days');
