-- Time in a usage interval that no idle source could classify (neither active nor idle).
-- It never counts as use; it shows which machines have no working idle source.
ALTER TABLE usage_records ADD COLUMN unclassified_s double precision NOT NULL DEFAULT 0;
