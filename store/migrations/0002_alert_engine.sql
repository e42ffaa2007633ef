-- The alert engine: zones, per-subject rule state, episodes as alerts with their history, the
-- notification outbox and its deliveries, thresholds, and the clock that clock-driven rules use.

-- Zones as the geofence core takes them. Victim zones have no geometry: they are a circle of
-- radius_m around the latest fix of victim_subject_id's phone. Deleting a zone keeps its row
-- (deleted_at) so alerts keep their reference and the in-memory index learns of the removal.
-- `revision` grows on every change, so an ingest worker catches up with one indexed query.
CREATE SEQUENCE zone_revision;
CREATE TABLE zones (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL DEFAULT '',
    kind               text NOT NULL CHECK (kind IN ('exclusion', 'inclusion', 'curfew', 'victim')),
    geometry           jsonb,
    radius_m           double precision CHECK (radius_m > 0),
    buffer_m           double precision CHECK (buffer_m > 0),
    subject_id         bigint REFERENCES subjects (id),
    group_name         text,
    region_id          text REFERENCES regions (id),
    victim_subject_id  bigint REFERENCES subjects (id),
    schedule           jsonb,
    thresholds         jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz,
    revision           bigint NOT NULL DEFAULT nextval('zone_revision'),
    CHECK ((kind = 'victim') = (victim_subject_id IS NOT NULL)),
    CHECK (kind = 'victim' OR geometry IS NOT NULL),
    CHECK (subject_id IS NULL OR group_name IS NULL)
);
CREATE INDEX zones_revision ON zones (revision);
CREATE INDEX zones_subject ON zones (subject_id);
CREATE INDEX zones_victim ON zones (victim_subject_id) WHERE victim_subject_id IS NOT NULL;

CREATE FUNCTION zones_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.revision := nextval('zone_revision');
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER zones_touch BEFORE UPDATE ON zones FOR EACH ROW EXECUTE FUNCTION zones_touch();

-- Subjects, too, change what the index holds (time zone, groups).
ALTER TABLE subjects ADD COLUMN revision bigint NOT NULL DEFAULT nextval('zone_revision');
ALTER TABLE subjects ADD COLUMN thresholds jsonb NOT NULL DEFAULT '{}';
CREATE INDEX subjects_revision ON subjects (revision);
CREATE FUNCTION subjects_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.timezone IS DISTINCT FROM OLD.timezone OR NEW.groups IS DISTINCT FROM OLD.groups
       OR NEW.thresholds IS DISTINCT FROM OLD.thresholds THEN
        NEW.revision := nextval('zone_revision');
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER subjects_touch BEFORE UPDATE ON subjects FOR EACH ROW
    EXECUTE FUNCTION subjects_touch();

-- Global thresholds (one row, scope 'global'); subject and zone overrides live on their rows.
CREATE TABLE alert_thresholds (
    scope   text PRIMARY KEY CHECK (scope = 'global'),
    values  jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Everything the rules remember about a subject, written in the same transaction as the fixes
-- and events that changed it. Row locks (FOR UPDATE, in subject order) keep several ingest
-- workers from interleaving on one subject.
CREATE TABLE rule_state (
    subject_id  bigint PRIMARY KEY REFERENCES subjects (id),
    state       jsonb NOT NULL,
    due_at      timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rule_state_due ON rule_state (due_at) WHERE due_at IS NOT NULL;

-- Alerts: one row per episode. episode_key identifies the episode (type, zone or device, the fix
-- time that opened it), so a replay can never raise it twice.
ALTER TABLE alerts ADD COLUMN episode_key text;
ALTER TABLE alerts ADD COLUMN zone_id bigint REFERENCES zones (id);
ALTER TABLE alerts ADD COLUMN region_id text REFERENCES regions (id);
ALTER TABLE alerts ADD COLUMN first_fix_at timestamptz;
ALTER TABLE alerts ADD COLUMN last_fix_at timestamptz;
ALTER TABLE alerts ADD COLUMN raised_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE alerts ADD COLUMN lat double precision;
ALTER TABLE alerts ADD COLUMN lon double precision;
ALTER TABLE alerts ADD COLUMN worst_distance_m double precision;
ALTER TABLE alerts ADD COLUMN fix_count integer NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN outcome text CHECK (outcome IN
    ('confirmed', 'false_alarm', 'equipment_fault', 'authorised_absence', 'traced', 'other'));
ALTER TABLE alerts ADD COLUMN resolution_note text;
ALTER TABLE alerts ADD COLUMN acknowledged_at timestamptz;
ALTER TABLE alerts ADD COLUMN acknowledged_by text;
ALTER TABLE alerts ADD COLUMN resolved_at timestamptz;
ALTER TABLE alerts ADD COLUMN resolved_by text;
ALTER TABLE alerts ADD COLUMN escalated boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX alerts_episode ON alerts (subject_id, episode_key);
CREATE INDEX alerts_region ON alerts (region_id, opened_at);
CREATE INDEX alerts_open ON alerts (status, type) WHERE status <> 'resolved';

-- Every change to an alert, by whom and when ('engine' for the rules).
CREATE TABLE alert_history (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id),
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, id);

CREATE TABLE alert_notes (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id),
    at        timestamptz NOT NULL DEFAULT now(),
    author    text NOT NULL,
    body      text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000)
);
CREATE INDEX alert_notes_alert ON alert_notes (alert_id, id);

-- The durable outbox: one row per alert change worth telling someone, written in the alert's
-- transaction. The id is the deduplication key receivers see.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    alert_id    bigint NOT NULL REFERENCES alerts (id),
    region_id   text,
    type        text NOT NULL,
    severity    text NOT NULL,
    event       text NOT NULL,
    payload     jsonb NOT NULL
);
CREATE INDEX outbox_alert ON outbox (alert_id);

CREATE TABLE webhook_subscriptions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    url         text NOT NULL,
    secret      text NOT NULL,
    regions     text[] NOT NULL DEFAULT '{*}',
    types       text[] NOT NULL DEFAULT '{*}',
    min_severity text NOT NULL DEFAULT 'info' CHECK (min_severity IN ('info', 'warning', 'critical')),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per (outbox entry, channel): 'mqtt' or 'webhook:{id}'. Delivered rows are final;
-- pending ones carry the next attempt's time (exponential backoff with jitter).
CREATE TABLE deliveries (
    outbox_id     bigint NOT NULL REFERENCES outbox (id),
    channel       text NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt  timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    delivered_at  timestamptz,
    PRIMARY KEY (outbox_id, channel)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt) WHERE status = 'pending';

CREATE TABLE delivery_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id   bigint NOT NULL,
    channel     text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    ok          boolean NOT NULL,
    status_code integer,
    error       text,
    duration_ms double precision
);
CREATE INDEX delivery_attempts_outbox ON delivery_attempts (outbox_id, channel);

-- The rules' clock. Without a row, clock-driven rules use the wall clock. A scenario replay sets
-- one (scenario time `origin` at wall time `wall_origin`, `speed` x faster), so a day replayed in
-- a minute sees its silences and its curfew starts at the right scenario times.
CREATE TABLE rule_clock (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    origin       timestamptz NOT NULL,
    wall_origin  timestamptz NOT NULL,
    speed        double precision NOT NULL CHECK (speed > 0)
);
