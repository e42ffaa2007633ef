-- Absconder cases (issue 16): what the tracing work records once an absconder alert exists, and
-- what the department's monthly absconder template counts. A case is opened in the absconder
-- alert's own transaction (or by an operator's declaration, which raises that alert), so there is
-- never an absconder without its case.
--
-- `region_id` is the subject's home region when the case opened: the template counts a case in
-- that region for its whole life, even if the subject moves region later. `cause` is why the
-- subject counts as absconded (the alert the absconder escalated from, or an operator's
-- declaration). `traced_at`/`outcome` say how it ended; `closed_at` when the paperwork ended.
-- Days at large run from `opened_at` to `traced_at` (or to the end of the reported month).

CREATE TABLE absconder_cases (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id         bigint NOT NULL REFERENCES subjects (id),
    region_id          text NOT NULL REFERENCES regions (id),
    alert_id           bigint UNIQUE REFERENCES alerts (id),
    cause              text NOT NULL
                       CHECK (cause IN ('strap_tamper', 'silence', 'inclusion_exit', 'declared')),
    opened_at          timestamptz NOT NULL,
    status             text NOT NULL DEFAULT 'outstanding'
                       CHECK (status IN ('outstanding', 'traced', 'closed')),
    outcome            text CHECK (outcome IN
                       ('returned_to_supervision', 'arrested', 'deceased', 'other')),
    traced_at          timestamptz,
    closed_at          timestamptz,
    tracing_unit_id    bigint REFERENCES tracing_units (id) ON DELETE SET NULL,
    officer            text CHECK (officer IS NULL OR length(officer) <= 200),
    police_case_number text CHECK (police_case_number IS NULL OR length(police_case_number) <= 100),
    warrant_number     text CHECK (warrant_number IS NULL OR length(warrant_number) <= 100),
    last_known         jsonb,
    trail              jsonb NOT NULL DEFAULT '[]',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'outstanding') = (traced_at IS NULL)),
    CHECK ((traced_at IS NULL) = (outcome IS NULL)),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CHECK (traced_at IS NULL OR traced_at >= opened_at),
    CHECK (closed_at IS NULL OR closed_at >= traced_at)
);
CREATE INDEX absconder_cases_region_opened ON absconder_cases (region_id, opened_at);
CREATE INDEX absconder_cases_subject ON absconder_cases (subject_id);
CREATE INDEX absconder_cases_unit_open ON absconder_cases (tracing_unit_id)
    WHERE status <> 'closed';
-- One case in progress per subject: a second absconder alert while one is outstanding joins it.
CREATE UNIQUE INDEX absconder_cases_one_outstanding ON absconder_cases (subject_id)
    WHERE status = 'outstanding';

-- The log of trace attempts: when, where, how, what came of it, by whom. Append-only.
CREATE TABLE absconder_case_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id      bigint NOT NULL REFERENCES absconder_cases (id),
    at           timestamptz NOT NULL,
    place        text CHECK (place IS NULL OR length(place) <= 500),
    lon          double precision CHECK (lon BETWEEN -180 AND 180),
    lat          double precision CHECK (lat BETWEEN -90 AND 90),
    method       text NOT NULL CHECK (length(method) BETWEEN 1 AND 100),
    outcome      text NOT NULL CHECK (length(outcome) BETWEEN 1 AND 1000),
    by_username  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((lon IS NULL) = (lat IS NULL))
);
CREATE INDEX absconder_case_attempts_case ON absconder_case_attempts (case_id, at);

-- A tracer belongs to a tracing unit: a case routed to that unit in another region is visible to
-- the tracer (the case and nothing else of the subject) while the case is not closed.
ALTER TABLE users ADD COLUMN tracing_unit_id bigint REFERENCES tracing_units (id) ON DELETE SET NULL;

-- A subject's photo, served only through audited reads of the subject or of a case.
CREATE TABLE subject_photos (
    subject_id    bigint PRIMARY KEY REFERENCES subjects (id),
    content_type  text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    data          bytea NOT NULL CHECK (length(data) <= 2000000),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
