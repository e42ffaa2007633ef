-- An approved home beacon per subject (issue 14).
--
-- A tag reports `beacon_home_enter` / `beacon_home_leave` when it sees the beacon unit installed
-- in the subject's home. The tag's credentials are in the wearer's hands, so a beacon event is
-- only a claim: the alert engine and the compliance report trust it only when a supervisor or an
-- admin has approved a beacon for the subject and the event names that beacon
-- (`detail: {"beacon": "<id>"}`, docs/contract-extensions.md). The id is the beacon unit's serial
-- (or its advertised identifier): a pairing, not a secret (docs/security.md).
--
-- Who approved it and when are kept beside it; the audit log keeps every change. A change of
-- the approval reaches the engine through the subjects' revision (its own trigger, so that
-- the shared `subjects_touch` function is left to the migrations that own it).

ALTER TABLE subjects
    ADD COLUMN home_beacon text CHECK (home_beacon ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    ADD COLUMN home_beacon_approved_by text,
    ADD COLUMN home_beacon_approved_at timestamptz,
    ADD CONSTRAINT subjects_home_beacon_approved CHECK (
        (home_beacon IS NULL) = (home_beacon_approved_by IS NULL)
        AND (home_beacon IS NULL) = (home_beacon_approved_at IS NULL)
    );

CREATE FUNCTION subjects_home_beacon_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.home_beacon IS DISTINCT FROM OLD.home_beacon THEN
        NEW.revision := nextval('zone_revision');
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER subjects_home_beacon_touch BEFORE UPDATE OF home_beacon ON subjects
    FOR EACH ROW EXECUTE FUNCTION subjects_home_beacon_touch();

-- The beacon a `beacon_home_*` event names: its `detail.beacon` when that is a string, else NULL
-- (the same reading as `tagwatch.alerts.batch.beacon_of`, which the engine applies to what
-- ingest stores). Until this migration ingest stored every event's detail double-encoded (a
-- jsonb string holding the JSON text, store/ingest_writer.py); such a row is read through its
-- text, and one whose text is not JSON names no beacon.
CREATE FUNCTION beacon_of(detail jsonb) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(detail) = 'string' THEN
        BEGIN
            detail := (detail #>> '{}')::jsonb;
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN NULL;
        END;
    END IF;
    IF jsonb_typeof(detail -> 'beacon') = 'string' THEN
        RETURN detail ->> 'beacon';
    END IF;
    RETURN NULL;
END $$;
