-- A global zone with a region applies to that region's subjects only: the alert engine puts
-- every subject in its region's group, so a subject moving region must reach the zone index.
CREATE OR REPLACE FUNCTION subjects_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.timezone IS DISTINCT FROM OLD.timezone OR NEW.groups IS DISTINCT FROM OLD.groups
       OR NEW.thresholds IS DISTINCT FROM OLD.thresholds
       OR NEW.region_id IS DISTINCT FROM OLD.region_id THEN
        NEW.revision := nextval('zone_revision');
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
