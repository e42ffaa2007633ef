-- Min/max summaries per compressed batch of the integer coordinates of migration 0027, beside
-- those of lat and lon (timescale_0003): proximity on compressed chunks skips a batch whose box
-- misses the search box whichever columns hold its positions (store/fixes asks
-- `lat BETWEEN ... OR lat_e7 BETWEEN ...`).
--
-- TimescaleDB pushes such an OR down to the summaries only where every branch has one, and it
-- applies new settings only to chunks compressed from now on: a chunk compressed before this
-- migration would lose the batch skipping it had. So every chunk already compressed is compressed
-- again here, with the new summaries. On a large store that is the cost of compressing it once
-- more (225 s for 100M fixes on the development machine); a chunk that cannot be is left as it
-- is, with a notice, and its batches are read rather than skipped by proximity.
DO $$
BEGIN
    EXECUTE $q$ALTER TABLE fixes SET (timescaledb.sparse_index =
        'minmax(lat), minmax(lon), minmax(lat_e7), minmax(lon_e7)')$q$;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'fixes: no sparse integer lat/lon index on compressed chunks (%)', SQLERRM;
END
$$;

DO $$
DECLARE
    chunk regclass;
BEGIN
    FOR chunk IN
        SELECT format('%I.%I', chunk_schema, chunk_name)::regclass
        FROM timescaledb_information.chunks
        WHERE hypertable_name = 'fixes' AND is_compressed
        ORDER BY range_start
    LOOP
        BEGIN
            PERFORM decompress_chunk(chunk);
            PERFORM compress_chunk(chunk);
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'fixes: chunk % keeps its old summaries (%)', chunk, SQLERRM;
        END;
    END LOOP;
END
$$;
