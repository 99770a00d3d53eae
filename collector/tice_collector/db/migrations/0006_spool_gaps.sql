-- Which seqs of each agent spool reached the collector, so that the ones that never did are
-- counted: a loss anywhere on the way (a torn write on a disk that ignores flushes, a batch
-- refused for good) shows up as a gap in the spool's sequence.
--   seqs            every seq seen from the spool (stored, duplicate, or refused as outside the
--                   time window), as ranges; a spool sends oldest first, so a few ranges.
--   gap_check_high  the highest seq seen at the latest gap check, and gap_check_at its time.
--   settled_high    seqs up to here have been below a seen seq for the grace period at least.
--   gaps            seqs up to settled_high never seen, less the agent's own drop count.
ALTER TABLE device_spools
    ADD COLUMN seqs int8multirange NOT NULL DEFAULT '{}',
    ADD COLUMN gap_check_high bigint NOT NULL DEFAULT 0,
    ADD COLUMN gap_check_at timestamptz,
    ADD COLUMN settled_high bigint NOT NULL DEFAULT 0,
    ADD COLUMN gaps bigint NOT NULL DEFAULT 0;

-- The seqs stored before this migration (one pass over the raw tables).
UPDATE device_spools s SET seqs = d.seqs
FROM (SELECT device_id, spool, range_agg(int8range(seq, seq, '[]')) AS seqs
      FROM (SELECT device_id, spool, seq FROM usage_records
            UNION ALL SELECT device_id, spool, seq FROM health_records
            UNION ALL SELECT device_id, spool, seq FROM link_records
            UNION ALL SELECT device_id, spool, seq FROM modem_records
            UNION ALL SELECT device_id, spool, seq FROM projector_records
            UNION ALL SELECT device_id, spool, seq FROM display_records
            UNION ALL SELECT device_id, spool, seq FROM disk_records
            UNION ALL SELECT device_id, spool, seq FROM probe_records) r
      GROUP BY device_id, spool) d
WHERE s.device_id = d.device_id AND s.spool = d.spool;
