-- Plain migrations run before the timescale_ ones: now that fixes is a hypertable, create the
-- reports' continuous aggregate (a no-op if 0005 already did, on a database that had it).
SELECT reports_enable_timescale();
