-- A store at national size, TimescaleDB side (docs/scaling.md "A store at national size").
--
-- Kept from timescale_0001, and why:
-- * chunk_time_interval 1 day: a day of a tag is 1,440 fixes, so each device's day compresses
--   into one full batch of 1,000 rows and one of 440 (batches hold at most 1,000); a 24-hour
--   track touches two chunks at most, a month's report 31. At 58,798 subjects a day is ~85M
--   fixes (~4 GB of btree): on a database server with less than 16 GB of memory, halve it with
--   set_chunk_time_interval (it applies to new chunks).
-- * segmentby device_id, orderby ts, seq: every per-subject query (track, latest position,
--   report counts) reads one device's batches, and ts in order compresses to almost nothing
--   (delta-of-delta of a 60 s cadence); seq likewise.
-- * compression after {compress_after}, retention {retain_fixes_for} (settings).
--
-- Added: min/max summaries of lat and lon per compressed batch, so proximity on compressed
-- chunks skips every batch (a device's day) whose box misses the search box instead of
-- decompressing it. The option exists from TimescaleDB 2.18 on (sparse indexes); on an older
-- version it is skipped with a notice and proximity decompresses the window's batches.
DO $$
BEGIN
    EXECUTE $q$ALTER TABLE fixes SET (timescaledb.sparse_index = 'minmax(lat), minmax(lon)')$q$;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'fixes: no sparse lat/lon index on compressed chunks (%)', SQLERRM;
END
$$;
