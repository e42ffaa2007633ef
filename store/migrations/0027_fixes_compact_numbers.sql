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

-- Proximity's grid-cell index (0026) keyed the float columns; it now keys the position as read.
-- Same rule as 0026: a table that is already a hypertable has no such index (its compressed
-- chunks carry min/max per batch, timescale_0003 and timescale_0005).
DO $$
DECLARE
    hyper boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $q$SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                                  WHERE hypertable_name = 'fixes')$q$ INTO hyper;
    END IF;
    IF NOT hyper THEN
        DROP INDEX IF EXISTS fixes_cell_ts;
        CREATE INDEX IF NOT EXISTS fixes_cell_ts ON fixes (
            fix_cell(COALESCE(lat, lat_e7 / 1e7::float8), COALESCE(lon, lon_e7 / 1e7::float8)),
            ts);
    END IF;
END
$$;
