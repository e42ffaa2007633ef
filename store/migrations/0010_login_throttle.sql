-- Login throttling that cannot be turned against the people it protects (issue 12, item 7), and
-- case references unique per region (item 10). The policy is in api/login_throttle.py and
-- docs/api.md "Login throttling".

-- A user name is never locked any more: it has a budget of failed guesses per window from
-- addresses it has not logged in from (``failures`` within ``window_start`` + the window); once
-- spent, those addresses wait for the next window, while the user's familiar addresses pass.
-- Old locks are dropped with the column.
DELETE FROM login_throttle;
ALTER TABLE login_throttle DROP COLUMN locked_until;
CREATE INDEX login_throttle_last_failure ON login_throttle (last_failure_at);

-- A client address (IPv4, or the /64 prefix of an IPv6 address: one host holds a whole /64) has
-- a budget of failed logins per window, whatever the name; once spent it is held back until
-- ``blocked_until``, for a time that doubles with each ``strike`` (exponential backoff), and the
-- strikes are forgotten after a quiet period.
CREATE TABLE login_address_throttle (
    address          text PRIMARY KEY,
    failures         integer NOT NULL DEFAULT 0,
    window_start     timestamptz NOT NULL DEFAULT now(),
    strikes          integer NOT NULL DEFAULT 0,
    blocked_until    timestamptz,
    last_failure_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_address_throttle_last_failure ON login_address_throttle (last_failure_at);

-- Where each user logged in successfully: a guess from one of these addresses is not charged to
-- the name's budget, so an attacker spending that budget from elsewhere does not lock the user
-- out at their usual workstation.
CREATE TABLE login_familiar_addresses (
    username         text NOT NULL,
    address          text NOT NULL,
    last_success_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, address)
);
CREATE INDEX login_familiar_addresses_last_success ON login_familiar_addresses (last_success_at);

-- Case references are issued by each region's office: unique within a region, not across them.
-- A global constraint made "create a subject with case_ref X" answer 409 when X existed in a
-- region the caller cannot see, which told them it existed there.
ALTER TABLE subjects DROP CONSTRAINT IF EXISTS subjects_case_ref_key;
ALTER TABLE subjects ADD CONSTRAINT subjects_region_case_ref_key UNIQUE (region_id, case_ref);
