-- A store at national size (issue 17 item 2; docs/scaling.md "A store at national size").
--
-- Fixes are written in (nearly) fix-time order, so the heap is physically sorted by ts: a BRIN
-- index of ts (one summary per 32 pages, a few kilobytes per 100 million fixes) lets a query
-- with a time window read only the pages of that window. Proximity (store/fixes.py SEARCH)
-- needs exactly that: every fix of every subject in one hour, then a lat/lon box. Without it
-- the planner had two choices, both bad at national size: a probe of fixes_once per held
-- device (one heap page per fix, for every monitored subject) or a scan of the whole table.
--
-- fixes_once (device_id, ts, seq) stays the only btree: it is the exactly-once key, and it
-- serves the track, the latest position and the report's counts. No index is redundant, and
-- reordering the columns against alignment padding saves 3 bytes a fix (measured: 117 -> 114
-- bytes of heap) for a rewrite of the whole table under an exclusive lock: not done.
--
-- A hypertable (TimescaleDB) already excludes whole chunks by time, and an index cannot be
-- added to its compressed chunks, so there the BRIN index is left out.
DO $$
DECLARE
    hyper boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $q$SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                                  WHERE hypertable_name = 'fixes')$q$ INTO hyper;
    END IF;
    IF NOT hyper THEN
        CREATE INDEX IF NOT EXISTS fixes_ts_brin ON fixes USING brin (ts)
            WITH (pages_per_range = 32);
    END IF;
END
$$;
