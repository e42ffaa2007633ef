-- Ingest asks "who held these devices" for every batch (device_id = ANY(...)); the GiST
-- exclusion index answers it too, but a plain btree is much cheaper per device (measured by
-- `tagwatch bench alerts` at 300,000 devices: 199 ms per batch without statistics).
CREATE INDEX IF NOT EXISTS device_assignments_device ON device_assignments (device_id);
