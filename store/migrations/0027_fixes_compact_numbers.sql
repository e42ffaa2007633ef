-- A fix's numbers as scaled integers where that stores them exactly (issue 17: bytes per fix;
-- docs/scaling.md "Bytes per fix").
--
-- TimescaleDB compresses a float8 column by XOR with the previous value (Gorilla): a GPS position
-- with 7 decimals keeps ~42 of its 64 bits, 5-6 bytes a fix for each of lat and lon; a receive
-- time to the microsecond 4 bytes; accuracy, speed and heading as real 1.6-3.4 bytes each. The
-- same numbers as integers compress by delta-of-delta to 1-2 bytes. Measured on the bench's
-- fixes (`bench store`, row models): 27.6 bytes a fix as stored, 13.5 with every number an
-- integer.
--
-- Nothing is rounded. Ingest (store/fix_columns.compact) writes the integer and leaves the
-- float column NULL only where the integer gives the sent value back bit for bit:
--   lat_e7, lon_e7     degrees * 10^7 (a tag's 7 decimals; a phone's full double stays in lat/lon)
--   acc_cm, spd_cms,   metres, m/s and degrees * 100, where that real is the one stored before
--   hdg_cdeg
--   received_ms        the receive time as milliseconds after the fix time, for the receive
--                      time to the millisecond (the server's own clock: its microseconds carried
--                      nothing) while it fits an integer
-- Otherwise the float columns hold the value as before and the integer is NULL. Rows written
-- before this migration, and rows written by hand, keep their floats. Every read takes
-- COALESCE(float, integer scaled back) (store/fix_columns), so a fix reads the same either way.
--
-- On a hypertable with compressed chunks these are catalogue changes only (TimescaleDB 2.28:
-- nullable columns added, NOT NULL dropped, in every chunk); nothing is rewritten.
ALTER TABLE fixes
    ADD COLUMN IF NOT EXISTS lat_e7 integer,
    ADD COLUMN IF NOT EXISTS lon_e7 integer,
    ADD COLUMN IF NOT EXISTS acc_cm integer,
    ADD COLUMN IF NOT EXISTS spd_cms integer,
    ADD COLUMN IF NOT EXISTS hdg_cdeg integer,
    ADD COLUMN IF NOT EXISTS received_ms integer;
ALTER TABLE fixes
    ALTER COLUMN lat DROP NOT NULL,
    ALTER COLUMN lon DROP NOT NULL,
    ALTER COLUMN received_at DROP NOT NULL;  -- its default (now()) stays for rows written by hand

-- A fix still has a position: each coordinate in one of its two columns. NOT VALID: rows written
-- before had NOT NULL floats, so the table is not scanned under the lock; new rows are checked.
DO $$
BEGIN
    ALTER TABLE fixes ADD CONSTRAINT fixes_have_a_position
        CHECK ((lat IS NOT NULL OR lat_e7 IS NOT NULL) AND (lon IS NOT NULL OR lon_e7 IS NOT NULL))
        NOT VALID;
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;

-- Proximity's grid-cell index (0026) keyed the float columns; it now keys the position as read
-- (store/fixes.FIX_CELL). An index on the old expression is dropped (it would index NULL for every
-- compact row and serve no query). The new one is made where the old one was, and on any table
-- that is not a hypertable (0026's rule: compressed chunks carry min/max per batch instead). An
-- index on the new expression made beforehand, under any name, is kept and none is added.
--
-- This runs under the lock of the ALTER TABLE above. On a large plain store, build the new
-- index first without blocking ingest, outside any transaction (this migration then only drops
-- the old one):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS fixes_cell_ts_v2 ON fixes (
--       fix_cell(COALESCE(lat, lat_e7 / 1e7::float8), COALESCE(lon, lon_e7 / 1e7::float8)), ts);
-- (run the two ALTER TABLE statements above on their own before it: the columns must exist).
DO $$
DECLARE
    hyper boolean := false;
    had_old boolean := false;
    old_index text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $q$SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                                  WHERE hypertable_name = 'fixes')$q$ INTO hyper;
    END IF;
    FOR old_index IN
        SELECT i.indexrelid::regclass::text FROM pg_index i
        WHERE i.indrelid = 'fixes'::regclass
          AND pg_get_indexdef(i.indexrelid) LIKE '%fix_cell(lat, lon)%'
    LOOP
        EXECUTE format('DROP INDEX %s', old_index);
        had_old := true;
    END LOOP;
    IF (NOT hyper OR had_old) AND NOT EXISTS (
        SELECT 1 FROM pg_index i WHERE i.indrelid = 'fixes'::regclass
          AND pg_get_indexdef(i.indexrelid) LIKE '%fix_cell(COALESCE(lat%'
    ) THEN
        CREATE INDEX fixes_cell_ts ON fixes (
            fix_cell(COALESCE(lat, lat_e7 / 1e7::float8), COALESCE(lon, lon_e7 / 1e7::float8)),
            ts);
    END IF;
END
$$;
