-- Victims' data: which subjects are victims, and which zones protect one.
--
-- A victim's whereabouts are the data an offender most wants, so they are readable by
-- supervisors and admins only (and every read of them is audited, api/audit.py); operators and
-- tracing units see that a protecting zone exists and its alerts, never the victim's address.
--
-- 1. zones.protects_subject_id links an exclusion zone (a victim's home, workplace, school) to
--    the victim it protects. Victim zones already name theirs (victim_subject_id: the zone
--    follows that victim's phone). A zone "protects a victim" when either is set.
-- 2. subjects.victim marks a victim subject. It is set by the API (a supervisor creates the
--    victim as one, before any address is entered), and kept true by the database while the
--    subject holds or held a device as `victim`, or a zone protects them: every writer (API,
--    CLI, scenario runner, plain SQL) gets the same answer, and the API's queries filter on one
--    indexed column rather than on two EXISTS probes. It is cleared only by an explicit update,
--    and only while nothing links the subject as a victim (a mistaken flag hides an offender
--    from the monitoring centre, so it must be correctable; a real victim's must not be).
-- 3. alert_public_details(zone_id, details): an alert's details as they leave the platform (the
--    outbox, hence webhooks, MQTT em/v1/alerts/{region} and the WebSocket feed): without the
--    zone's name when the zone protects a victim (a name like "12 Oak Lane" is an address).

ALTER TABLE zones ADD COLUMN protects_subject_id bigint REFERENCES subjects (id);
ALTER TABLE zones ADD CONSTRAINT zones_protects_exclusion
    CHECK (protects_subject_id IS NULL OR kind = 'exclusion');
CREATE INDEX zones_protects ON zones (protects_subject_id) WHERE protects_subject_id IS NOT NULL;

ALTER TABLE subjects ADD COLUMN victim boolean NOT NULL DEFAULT false;
CREATE INDEX subjects_victim ON subjects (id) WHERE victim;

CREATE FUNCTION subject_victim_links(p_subject bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM device_assignments
                   WHERE subject_id = p_subject AND role = 'victim')
        OR EXISTS (SELECT 1 FROM zones
                   WHERE victim_subject_id = p_subject OR protects_subject_id = p_subject)
$$;

-- An update cannot clear the flag of a subject that is linked as a victim.
CREATE FUNCTION subjects_victim_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.victim AND NOT NEW.victim AND subject_victim_links(NEW.id) THEN
        NEW.victim := true;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER subjects_victim_keep BEFORE UPDATE OF victim ON subjects FOR EACH ROW
    EXECUTE FUNCTION subjects_victim_keep();

CREATE FUNCTION device_assignments_victim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.role = 'victim' THEN
        UPDATE subjects SET victim = true WHERE id = NEW.subject_id AND NOT victim;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER device_assignments_victim AFTER INSERT OR UPDATE OF role, subject_id
    ON device_assignments FOR EACH ROW EXECUTE FUNCTION device_assignments_victim();

CREATE FUNCTION zones_victim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE subjects SET victim = true
     WHERE id IN (NEW.victim_subject_id, NEW.protects_subject_id) AND NOT victim;
    RETURN NULL;
END $$;
CREATE TRIGGER zones_victim AFTER INSERT OR UPDATE OF victim_subject_id, protects_subject_id
    ON zones FOR EACH ROW EXECUTE FUNCTION zones_victim();

-- Existing victims.
UPDATE subjects SET victim = true WHERE subject_victim_links(id);

CREATE FUNCTION alert_public_details(p_zone bigint, p_details jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM zones z WHERE z.id = p_zone
                             AND (z.victim_subject_id IS NOT NULL
                                  OR z.protects_subject_id IS NOT NULL))
                THEN COALESCE(p_details, '{}'::jsonb) - 'zone_name'
                ELSE p_details END
$$;
