-- Reports: compliance per region and month, absconders, and what backs them.
--
-- 1. A region may carry an IANA time zone; a month report's boundaries (and its days) are
--    midnights in that zone, or in UTC when it has none.
-- 2. report_subject_regions says which region a subject was in, over time, as the reports
--    attribute monitored days and alerts. Subjects keep no region history yet, so a subject counts
--    in its current region for all time. A later migration that records region changes replaces
--    this view (same columns: subject_id, region_id, during) and the reports follow it, unchanged.
-- 3. With TimescaleDB, a continuous aggregate of fixes per device and quarter hour backs the
--    monthly fix figures (report_fixes_15m); without it the same figures come from fixes itself.
--    Created by reports_enable_timescale(), which does nothing on plain PostgreSQL and may be
--    called again at any time (e.g. after the timescale_ migrations made fixes a hypertable).

ALTER TABLE regions ADD COLUMN IF NOT EXISTS timezone text;

CREATE VIEW report_subject_regions AS
SELECT id AS subject_id, region_id, tstzrange(NULL, NULL) AS during FROM subjects;

CREATE INDEX IF NOT EXISTS alerts_type_opened ON alerts (type, opened_at);

CREATE FUNCTION reports_enable_timescale() RETURNS boolean LANGUAGE plpgsql AS $$
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
    RETURN true;
END $$;

SELECT reports_enable_timescale();
