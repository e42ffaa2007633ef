-- Min/max summaries per compressed batch of the integer coordinates of migration 0027, beside
-- those of lat and lon (timescale_0003): proximity on compressed chunks skips a batch whose box
-- misses the search box whichever columns hold its positions (store/fixes.NEAR asks for both).
-- TimescaleDB applies the setting to chunks compressed from now on; chunks already compressed
-- keep their summaries of lat and lon only, which serve the rows written before 0027 (the rows
-- with integer coordinates in such a chunk are written after it was compressed, and TimescaleDB
-- recompresses them with the chunk's old settings: those batches are read, not skipped, until
-- `compress_chunk(c, recompress => true)`).
DO $$
BEGIN
    EXECUTE $q$ALTER TABLE fixes SET (timescaledb.sparse_index =
        'minmax(lat), minmax(lon), minmax(lat_e7), minmax(lon_e7)')$q$;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'fixes: no sparse integer lat/lon index on compressed chunks (%)', SQLERRM;
END
$$;
