-- Absconder cases, continued (issue 16 items 2-3): the alerts a case is made of, who changed a
-- case last, and the explicit grants by which a tracing unit of another region reaches a case.
--
-- Every absconder alert belongs to exactly one case: the one it opened, or the outstanding case
-- of its subject that it joined (a second absconder while one is outstanding).
CREATE TABLE absconder_case_alerts (
    alert_id   bigint PRIMARY KEY REFERENCES alerts (id),
    case_id    bigint NOT NULL REFERENCES absconder_cases (id),
    joined_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX absconder_case_alerts_case ON absconder_case_alerts (case_id);

-- Who made the last change of a case ('engine' when the alert engine opened or joined it): the
-- grant trigger below writes it into the grants it starts and ends.
ALTER TABLE absconder_cases ADD COLUMN changed_by text NOT NULL DEFAULT 'engine';

-- A grant: from `granted_at` to `revoked_at`, the tracers of `tracing_unit_id` (users whose
-- tracing_unit_id it is) may read and work this case - the case and nothing else of the
-- subject - whatever their regions. One grant is active per case: the case's tracing unit's,
-- while the case is not closed. Grants are kept after they end, as evidence of who could see
-- what and when; `tracing_unit_id` is a plain number so that deleting a unit keeps the record.
CREATE TABLE absconder_case_grants (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id           bigint NOT NULL REFERENCES absconder_cases (id),
    tracing_unit_id   bigint NOT NULL,
    unit_region_id    text,
    case_region_id    text NOT NULL,
    granted_at        timestamptz NOT NULL DEFAULT now(),
    granted_by        text NOT NULL,
    revoked_at        timestamptz,
    revoked_by        text,
    revoke_reason     text CHECK (revoke_reason IS NULL
                                  OR revoke_reason IN ('closed', 'reassigned', 'unit_removed')),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
);
CREATE UNIQUE INDEX absconder_case_grants_one_active ON absconder_case_grants (case_id)
    WHERE revoked_at IS NULL;
CREATE INDEX absconder_case_grants_unit_active ON absconder_case_grants (tracing_unit_id)
    WHERE revoked_at IS NULL;

-- Grants follow the case, whoever changes it (the engine opening it with its routing, an
-- operator reassigning it, a close, a tracing unit deleted under it): they cannot drift.
CREATE FUNCTION absconder_case_grant_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint := CASE WHEN NEW.status <> 'closed' THEN NEW.tracing_unit_id END;
    active bigint;
BEGIN
    SELECT tracing_unit_id INTO active FROM absconder_case_grants
        WHERE case_id = NEW.id AND revoked_at IS NULL;
    IF active IS NOT DISTINCT FROM wanted THEN
        RETURN NEW;
    END IF;
    IF active IS NOT NULL THEN
        UPDATE absconder_case_grants SET revoked_at = now(), revoked_by = NEW.changed_by,
            revoke_reason = CASE WHEN NEW.status = 'closed' THEN 'closed'
                                 WHEN NEW.tracing_unit_id IS NULL
                                      AND NEW.changed_by = OLD.changed_by THEN 'unit_removed'
                                 ELSE 'reassigned' END
            WHERE case_id = NEW.id AND revoked_at IS NULL;
    END IF;
    IF wanted IS NOT NULL THEN
        INSERT INTO absconder_case_grants
            (case_id, tracing_unit_id, unit_region_id, case_region_id, granted_by)
        SELECT NEW.id, wanted, (SELECT region_id FROM tracing_units WHERE id = wanted),
            NEW.region_id, NEW.changed_by;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER absconder_case_grants_follow
    AFTER INSERT OR UPDATE OF tracing_unit_id, status ON absconder_cases
    FOR EACH ROW EXECUTE FUNCTION absconder_case_grant_sync();
