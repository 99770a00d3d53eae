-- Use is judged inside each school's teaching hours; out-of-hours use is its own figure, and
-- a too-new device says when it will be judged (docs/usage-policy.md).

-- A school's own teaching periods for a weekday, where they differ from the collector's
-- defaults (settings teaching_hours and wednesday_hours). Local time; "-" = no class that day.
CREATE TABLE school_hours (
    school   text NOT NULL REFERENCES schools (uai),
    weekday  smallint NOT NULL CHECK (weekday BETWEEN 0 AND 6),  -- 0 = Monday
    periods  text NOT NULL CHECK (periods ~ '^(-|[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]( [0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]){0,3})$'),
    PRIMARY KEY (school, weekday)
);

-- Each daily figure, counted again inside the school's teaching periods for that weekday (as if
-- the day were a school day: the calendar decides when the day is judged whether it was one).
-- Out of hours = the day's figure minus this.
ALTER TABLE daily_usage
    ADD COLUMN active_in_hours_s           double precision NOT NULL DEFAULT 0,
    ADD COLUMN external_display_in_hours_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN projector_on_in_hours_s     double precision NOT NULL DEFAULT 0,
    ADD COLUMN modem_in_hours_bytes        bigint NOT NULL DEFAULT 0;
-- Days rolled up before hours existed: once their raw records are gone their activity cannot be
-- placed in the day, so it stays counted in hours, as it was judged. Days whose records arrived
-- in the last 120 days (what verdicts read) are recomputed by the next rollup run.
UPDATE daily_usage SET active_in_hours_s = active_s, external_display_in_hours_s = external_display_s,
                       projector_on_in_hours_s = projector_on_s, modem_in_hours_bytes = modem_bytes;
UPDATE rollup_state SET watermark = least(watermark, now() - interval '120 days');

-- Verdicts: from which day a too-new device will be judged; days of the window's span on which
-- the device was used out of hours (shown, never evidence).
ALTER TABLE device_flags
    ADD COLUMN judged_from        date,
    ADD COLUMN out_of_hours_days  integer NOT NULL DEFAULT 0;
