-- The compliance report (store/reports.BUCKET_COUNTS) reads each held device's quarter-hour
-- rows of the month from the continuous aggregate report_fixes_15m: 1.9 million rows for a
-- region-month at 100M stored fixes. TimescaleDB's own index on the aggregate is
-- (device_id, bucket DESC) without the count, so every row was a heap page as well. With the
-- count in the index the read is an index-only scan of the materialized hypertable (which
-- autovacuum keeps visible). `tagwatch bench store`, 10M fixes, the four regions' reports three
-- times each (2026-12-07): 162-223 ms without it, 63-96 ms with it.
--
-- reports_enable_timescale() (migration 0005) makes the index too, so an aggregate it creates
-- again later has it; an index on a continuous aggregate is made on its materialized hypertable.

CREATE OR REPLACE FUNCTION reports_enable_timescale() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    is_hypertable boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN false;
    END IF;
    -- Statements naming Timescale objects are EXECUTEd, so plain PostgreSQL never parses them.
    EXECUTE $q$SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_name = 'fixes')$q$ INTO is_hypertable;
    IF NOT is_hypertable THEN
        RETURN false;
    END IF;
    IF to_regclass('report_fixes_15m') IS NULL THEN
        -- Quarter hours: every time zone in use today is a whole number of quarter hours from
        -- UTC, so local days are made of whole buckets; assignment boundaries that fall inside a
        -- bucket are counted from fixes itself (store/reports.py), so both paths agree exactly.
        EXECUTE $q$
            CREATE MATERIALIZED VIEW report_fixes_15m
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '15 minutes', ts) AS bucket, device_id,
                   count(*) AS fixes
            FROM fixes GROUP BY time_bucket(INTERVAL '15 minutes', ts), device_id
            WITH NO DATA
        $q$;
        -- start_offset NULL: late uploads of any age are re-aggregated on the next run.
        EXECUTE $q$
            SELECT add_continuous_aggregate_policy('report_fixes_15m',
                start_offset => NULL, end_offset => INTERVAL '15 minutes',
                schedule_interval => INTERVAL '15 minutes')
        $q$;
    END IF;
    -- The report reads each held device's rows of the month (store/reports.BUCKET_COUNTS); with
    -- the count in the index that read is index-only (this migration's header).
    EXECUTE $q$
        CREATE INDEX IF NOT EXISTS report_fixes_15m_device_bucket_fixes
            ON report_fixes_15m (device_id, bucket) INCLUDE (fixes)
    $q$;
    RETURN true;
END $$;

SELECT reports_enable_timescale();
