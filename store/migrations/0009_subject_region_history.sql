-- Where a subject was monitored, over time. A subject moves between regions (their borders need
-- not follow municipal ones); reports attribute monitored days and alerts by this history, and
-- the API shows it. Kept by triggers, so every writer (API, CLI, scenario runner) records it; the
-- API names who made the change with SET LOCAL tagwatch.actor.
CREATE TABLE subject_regions (
    subject_id  bigint NOT NULL REFERENCES subjects (id),
    region_id   text NOT NULL REFERENCES regions (id),
    during      tstzrange NOT NULL CHECK (NOT isempty(during)),
    changed_by  text,
    EXCLUDE USING gist (subject_id WITH =, during WITH &&)
);
CREATE INDEX subject_regions_region ON subject_regions (region_id);

-- Existing subjects: in their current region for all time, as the reports assumed until now.
INSERT INTO subject_regions (subject_id, region_id, during, changed_by)
SELECT id, region_id, tstzrange(NULL, NULL), 'migration' FROM subjects;

CREATE FUNCTION subject_regions_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- unbounded below: fixes and assignments may predate the subject's row (a case moved in)
    INSERT INTO subject_regions (subject_id, region_id, during, changed_by)
    VALUES (NEW.id, NEW.region_id, tstzrange(NULL, NULL),
            nullif(current_setting('tagwatch.actor', true), ''));
    RETURN NULL;
END $$;
CREATE TRIGGER subject_regions_insert AFTER INSERT ON subjects FOR EACH ROW
    EXECUTE FUNCTION subject_regions_insert();

CREATE FUNCTION subject_regions_move() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := clock_timestamp();
BEGIN
    IF NEW.region_id IS NOT DISTINCT FROM OLD.region_id THEN
        RETURN NULL;
    END IF;
    UPDATE subject_regions SET during = tstzrange(lower(during), at)
     WHERE subject_id = NEW.id AND upper_inf(during) AND (lower(during) IS NULL OR lower(during) < at);
    INSERT INTO subject_regions (subject_id, region_id, during, changed_by)
    VALUES (NEW.id, NEW.region_id, tstzrange(at, NULL),
            nullif(current_setting('tagwatch.actor', true), ''));
    RETURN NULL;
END $$;
CREATE TRIGGER subject_regions_move AFTER UPDATE OF region_id ON subjects FOR EACH ROW
    EXECUTE FUNCTION subject_regions_move();

-- The reports' view of it (migration 0005 defined it over the current region only).
CREATE OR REPLACE VIEW report_subject_regions AS
SELECT subject_id, region_id, during FROM subject_regions;
