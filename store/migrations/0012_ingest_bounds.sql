-- Bounded dead letters: a flood of refused input must not fill the disk or the memory of ingest.
--
-- A dead letter now keeps a prefix of its payload (4 KiB) with the length and SHA-256 of the
-- whole, and who sent it (`sender`: the device id of a tag topic, `owntracks/{user}` of a phone's).
-- Rows written before this migration keep their full payload and have no sender, digest or
-- length; they stay out of the uniqueness below.
ALTER TABLE dead_letters
    ADD COLUMN sender            text,
    ADD COLUMN payload_sha256    bytea CHECK (octet_length(payload_sha256) = 32),
    ADD COLUMN payload_length    integer CHECK (payload_length >= 0),
    ADD COLUMN repeats           integer NOT NULL DEFAULT 1 CHECK (repeats >= 1),
    ADD COLUMN last_received_at  timestamptz;

-- The same bad message again (a broker redelivery after a crash between commit and
-- acknowledgement, or a device repeating itself) is one row with a repeat count. md5(topic)
-- keeps the key small whatever the topic's length.
CREATE UNIQUE INDEX dead_letters_once
    ON dead_letters (sender, reason, payload_sha256, md5(topic))
    WHERE sender IS NOT NULL;

-- Every refused message, counted by sender and reason, whether its dead letter was stored or
-- (beyond the per-sender limit) only counted here. Written in the batch's transaction, before
-- the messages are acknowledged, so the count survives restarts and never misses one.
CREATE TABLE dead_letter_tally (
    sender      text NOT NULL,
    reason      text NOT NULL,
    total       bigint NOT NULL DEFAULT 0,
    not_stored  bigint NOT NULL DEFAULT 0,
    last_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender, reason)
);

-- How many dead letters each sender stored in the current minute (the per-sender limit,
-- TAGWATCH_DEAD_LETTERS_PER_DEVICE_MINUTE); a row lock makes it exact across ingest workers.
CREATE TABLE dead_letter_budget (
    sender        text PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    stored        integer NOT NULL DEFAULT 0
);
