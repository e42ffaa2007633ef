-- Foundation schema: who is monitored, with which device, and everything the devices send.
-- Every timestamp is timestamptz (UTC in, UTC out); nothing naive is ever stored.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE regions (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subjects (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    case_ref     text UNIQUE,
    region_id    text NOT NULL REFERENCES regions (id),
    timezone     text NOT NULL DEFAULT 'UTC',
    groups       text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subjects_region ON subjects (region_id);

CREATE TABLE devices (
    id                 text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    kind               text NOT NULL CHECK (kind IN ('tag', 'phone', 'victim_phone')),
    owntracks_topic    text UNIQUE,
    expected_interval_s integer NOT NULL DEFAULT 60 CHECK (expected_interval_s > 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'tag') = (owntracks_topic IS NULL))
);

-- A fix belongs to whoever holds the device at the fix's own time, so holding is a time range
-- and two holders of one device can never overlap.
CREATE TABLE device_assignments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text NOT NULL REFERENCES devices (id),
    subject_id  bigint NOT NULL REFERENCES subjects (id),
    role        text NOT NULL CHECK (role IN ('offender', 'victim')),
    during      tstzrange NOT NULL CHECK (NOT isempty(during)),
    created_at  timestamptz NOT NULL DEFAULT now(),
    EXCLUDE USING gist (device_id WITH =, during WITH &&)
);
CREATE INDEX device_assignments_subject ON device_assignments (subject_id);

-- seq = -1 when the device sent none: the dedup key is then (device, ts).
CREATE TABLE fixes (
    device_id    text NOT NULL,
    ts           timestamptz NOT NULL,
    seq          bigint NOT NULL DEFAULT -1,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    acc          real,
    alt          real,
    spd          real,
    hdg          real,
    sats         smallint,
    batt         real,
    src          text NOT NULL DEFAULT 'gps',
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX fixes_once ON fixes (device_id, ts, seq);

CREATE TABLE device_events (
    device_id    text NOT NULL,
    ts           timestamptz NOT NULL,
    seq          bigint NOT NULL DEFAULT -1,
    type         text NOT NULL,
    batt         real,
    detail       jsonb,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX device_events_once ON device_events (device_id, ts, seq, type);

CREATE TABLE device_status (
    device_id   text PRIMARY KEY,
    status      text NOT NULL CHECK (status IN ('online', 'offline')),
    changed_at  timestamptz NOT NULL,
    source      text NOT NULL
);

-- Bad input is kept, never dropped: the raw bytes and why they were refused.
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);

CREATE TABLE alerts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id   bigint REFERENCES subjects (id),
    device_id    text REFERENCES devices (id),
    type         text NOT NULL,
    severity     text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    opened_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    cleared_at   timestamptz,
    late         boolean NOT NULL DEFAULT false,
    details      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alerts_queue ON alerts (status, severity, opened_at);
CREATE INDEX alerts_subject ON alerts (subject_id, opened_at);

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL UNIQUE,
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('admin', 'supervisor', 'operator', 'tracer')),
    regions        text[] NOT NULL DEFAULT '{}',
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Every read of location data, by whom and why.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    username    text NOT NULL,
    role        text NOT NULL,
    action      text NOT NULL,
    subject_id  bigint,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject ON audit_log (subject_id, at);

-- Ingest counters, written in the same transaction as the batch they count, so the metrics
-- agree exactly with what is stored, across restarts and several workers.
CREATE TABLE ingest_counters (
    worker  text NOT NULL,
    metric  text NOT NULL,
    label   text NOT NULL DEFAULT '',
    value   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (worker, metric, label)
);
