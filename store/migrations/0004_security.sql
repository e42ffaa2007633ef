-- Security: a hash-chained audit log, login throttling and token revocation.
--
-- Audit chain. Every audit_log row carries its place in the chain (seq, 1, 2, 3, ... without
-- gaps), the hash of the row before it (prev_hash; the first row's is the genesis value, 64 '0')
-- and its own hash:
--
--     hash = hex(SHA-256(UTF-8("tagwatch-audit-v1;" || F(seq) || F(id) || F(at) || F(username)
--                              || F(role) || F(action) || F(subject_id) || F(detail) || F(prev_hash))))
--
-- where F(NULL) = 'N;' and F(v) = octet_length(v) || ':' || v || ';' (length-prefixed, so no
-- two different rows serialise alike), `at` is written in UTC as 2026-01-31T23:59:59.123456Z and
-- `detail` is PostgreSQL's canonical jsonb text (keys sorted, fixed spacing; the `reason` a user
-- gave for a read is in it). `tagwatch audit verify` (tagwatch/audit_verify.py) recomputes the
-- same in Python.
--
-- Appends are chained by a deferred constraint trigger, at the commit of the transaction that
-- wrote the row (the same transaction as the read it records), under a row lock on the one-row
-- audit_chain_head: concurrent requests are serialised there and can never fork the chain, and
-- the lock is held only for the commit, not for the read. Any writer that inserts into
-- audit_log gets chained; a row slipped in with triggers disabled has no seq and is reported.
-- Existing rows (a database migrated from before this file) are chained here, in id order.

ALTER TABLE audit_log
    ADD COLUMN seq        bigint,
    ADD COLUMN prev_hash  text,
    ADD COLUMN hash       text;
CREATE UNIQUE INDEX audit_log_seq ON audit_log (seq);

CREATE TABLE audit_chain_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq   bigint NOT NULL,
    last_hash  text NOT NULL
);

CREATE FUNCTION audit_field(p_value text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_value IS NULL THEN 'N;'
                ELSE octet_length(p_value)::text || ':' || p_value || ';' END
$$;

CREATE FUNCTION audit_row_hash(
    p_seq bigint, p_id bigint, p_at timestamptz, p_username text, p_role text, p_action text,
    p_subject_id bigint, p_detail jsonb, p_prev_hash text
) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT encode(sha256(convert_to(
        'tagwatch-audit-v1;'
        || audit_field(p_seq::text)
        || audit_field(p_id::text)
        || audit_field(to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        || audit_field(p_username)
        || audit_field(p_role)
        || audit_field(p_action)
        || audit_field(p_subject_id::text)
        || audit_field(p_detail::text)
        || audit_field(p_prev_hash),
        'UTF8')), 'hex')
$$;

-- Chain what is already there, in id order, from the genesis.
DO $$
DECLARE
    r     record;
    prev  text := repeat('0', 64);
    n     bigint := 0;
    h     text;
BEGIN
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        n := n + 1;
        h := audit_row_hash(n, r.id, r.at, r.username, r.role, r.action, r.subject_id,
                            r.detail, prev);
        UPDATE audit_log SET seq = n, prev_hash = prev, hash = h WHERE id = r.id;
        prev := h;
    END LOOP;
    INSERT INTO audit_chain_head (singleton, last_seq, last_hash) VALUES (true, n, prev);
END $$;

CREATE FUNCTION audit_chain_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head  audit_chain_head%ROWTYPE;
    r     audit_log%ROWTYPE;
    h     text;
BEGIN
    -- The row as it is at commit (the transaction may have changed it since the insert).
    SELECT * INTO r FROM audit_log WHERE id = NEW.id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO head FROM audit_chain_head WHERE singleton FOR UPDATE;
    h := audit_row_hash(head.last_seq + 1, r.id, r.at, r.username, r.role, r.action,
                        r.subject_id, r.detail, head.last_hash);
    UPDATE audit_log SET seq = head.last_seq + 1, prev_hash = head.last_hash, hash = h
        WHERE id = r.id;
    UPDATE audit_chain_head SET last_seq = head.last_seq + 1, last_hash = h WHERE singleton;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER audit_log_chain AFTER INSERT ON audit_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_chain_append();

-- Login throttling, per username (known or not, so that a lock does not reveal which names
-- exist), shared by every API process.
CREATE TABLE login_throttle (
    username         text PRIMARY KEY,
    failures         integer NOT NULL DEFAULT 0,
    window_start     timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    last_failure_at  timestamptz NOT NULL DEFAULT now()
);

-- Token revocation: a logged-out token's id until it would have expired anyway, and a
-- per-user generation that a password change or reset bumps (tokens carry the generation they
-- were issued under; older ones are refused).
CREATE TABLE revoked_tokens (
    jti         text PRIMARY KEY,
    user_id     bigint,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);

ALTER TABLE users
    ADD COLUMN token_generation     integer NOT NULL DEFAULT 0,
    ADD COLUMN password_changed_at  timestamptz,
    ADD COLUMN updated_at           timestamptz NOT NULL DEFAULT now();
