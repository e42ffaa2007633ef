-- The compliance report (store/reports.BUCKET_COUNTS) reads each held device's quarter-hour
-- rows of the month from the continuous aggregate report_fixes_15m: 1.9 million rows for a
-- region-month at 100M stored fixes. TimescaleDB's own index on the aggregate is
-- (device_id, bucket DESC) without the count, so every row was a heap page as well. With the
-- count in the index the read is an index-only scan of the materialized hypertable (which
-- autovacuum keeps visible). `tagwatch bench store`, 10M fixes, the four regions' reports three
-- times each (2026-12-07): 162-223 ms without it, 63-96 ms with it.
-- An index on a continuous aggregate is created on its materialized hypertable.
DO $$
BEGIN
    IF to_regclass('report_fixes_15m') IS NOT NULL THEN
        CREATE INDEX report_fixes_15m_device_bucket_fixes
            ON report_fixes_15m (device_id, bucket) INCLUDE (fixes);
    END IF;
END
$$;
