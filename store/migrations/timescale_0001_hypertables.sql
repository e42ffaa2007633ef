-- Applied only when the timescaledb extension is available. {compress_after} and
-- {retain_fixes_for} come from settings (TAGWATCH_COMPRESS_AFTER, TAGWATCH_RETAIN_FIXES_FOR).
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('fixes', 'ts', chunk_time_interval => INTERVAL '1 day', migrate_data => true);
SELECT create_hypertable('device_events', 'ts', chunk_time_interval => INTERVAL '7 days', migrate_data => true);
ALTER TABLE fixes SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'ts, seq');
ALTER TABLE device_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'ts, seq');
SELECT add_compression_policy('fixes', INTERVAL '{compress_after}');
SELECT add_compression_policy('device_events', INTERVAL '{compress_after}');
SELECT add_retention_policy('fixes', INTERVAL '{retain_fixes_for}');
SELECT add_retention_policy('device_events', INTERVAL '{retain_fixes_for}');
