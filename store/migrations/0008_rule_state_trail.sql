-- The alert engine rewrites every evaluated subject's rule state in each ingest batch. Its
-- trail (the last TRAIL_FIXES positions: 120 numbers) was most of the jsonb, so most of the
-- cost of every write and read on both sides (jsonb numerics parsed and printed, Python lists
-- built and encoded). It now lives beside the state as packed little-endian float64
-- (ts, lon, lat, acc) quadruples: copied, never parsed. A state whose jsonb still has a "trail"
-- key (written before this migration) is read from there until the engine rewrites it.
ALTER TABLE rule_state ADD COLUMN IF NOT EXISTS trail bytea;

-- Ingest asks "who held these devices" for every batch. With `device_id = ANY(2,000 ids)` the
-- planner seq-scanned the assignments and hash-joined every device (two parallel processes,
-- 50-80 ms a batch at 220,000 devices, growing with the table; 9-23 ms with this index);
-- the engine now probes once per device (a LATERAL lookup) on this covering index, answered
-- from the index alone. It is built with the "C" collation and the engine compares with
-- `device_id COLLATE "C"` (the same equality for ids: deterministic collations compare bytes),
-- so no other index matches the probe: left to cost estimates, the planner took the GiST
-- exclusion index whenever the visibility map was not set yet, 3-5x slower per probe.
CREATE INDEX IF NOT EXISTS device_assignments_holder
    ON device_assignments (device_id COLLATE "C") INCLUDE (subject_id, role, during);
