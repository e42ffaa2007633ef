-- Proximity at national size (issue 17 item 2; docs/scaling.md "A store at national size").
--
-- The BRIN index on ts (0024) lets proximity read only its window's heap pages, but that is every
-- fix of the nation in the window: at 9,539 subjects an hour is 595,000 fixes on 8,500 pages, and
-- proximity's p99 was 1.6 s on 100M stored fixes (target 200 ms), growing with the caseload. A
-- btree on (grid cell, ts) finds the fixes in the search box's few cells in the window directly.
--
-- The cell is a 0.01 degree square (1.1 km north-south; 640 m east-west at 55 degrees): a 500 m
-- search box touches 2 x 3 cells at most. fix_cell is total: a position outside the valid range
-- (which ingest never stores) has no cell (NULL) instead of an "integer out of range" error that
-- would refuse the whole batch. store/fixes.grid_cells computes the same numbers in Python (the
-- same IEEE multiplication and floor), and the search keeps its lat/lon box and haversine test, so
-- a cell is only a way in, never the answer.
--
-- It costs about 31 bytes a fix (a 4-byte key and the 8-byte ts in a 24-byte index tuple, its
-- line pointer, leaf fill). As with the BRIN index (0024), a table that is already a hypertable
-- (TimescaleDB added to an existing store) does not get it here: its compressed chunks carry
-- lat/lon min/max per batch (timescale_0003). On a fresh database the plain migrations run
-- first, so the index exists when timescale_0001 makes fixes a hypertable, and it then serves the
-- uncompressed chunks (compressed chunks keep no index of it).
--
-- On a large existing store, create the index first without blocking ingest, outside any
-- transaction (this migration then finds it and does nothing):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS fixes_cell_ts ON fixes (fix_cell(lat, lon), ts);
-- (the function below must exist first: run its CREATE FUNCTION on its own beforehand).
-- Upgrading past 0027 as well: build 0027's index instead (see there); 0027 replaces this one.
CREATE OR REPLACE FUNCTION fix_cell(lat double precision, lon double precision) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180
                THEN (floor(lat * 100)::integer + 9000) * 36001 + (floor(lon * 100)::integer + 18000)
           END;

DO $$
DECLARE
    hyper boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $q$SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                                  WHERE hypertable_name = 'fixes')$q$ INTO hyper;
    END IF;
    IF NOT hyper THEN
        CREATE INDEX IF NOT EXISTS fixes_cell_ts ON fixes (fix_cell(lat, lon), ts);
    END IF;
END
$$;
