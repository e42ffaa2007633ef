-- OwnTracks, all of it (issue 15).
--
-- Every OwnTracks message a phone sends that is not a fresh position is kept here: `lwt`,
-- `transition` (whose position is also a fix), `status`, `card`, `waypoint(s)`, `steps`,
-- `configuration`, `beacon`, `request`, and the `location` pings (`t: "p"`) whose `tst` is the
-- time of the ping, not of the position, so they are never fixes. A fresh `location` is a fix
-- and also one row here (without its payload) with the phone's state: battery, charging,
-- monitoring mode, connectivity, trigger. The alert engine reads the rows that were new.
-- `ts` is the message's own time (`tst`) when it has one, else when ingest received it. The
-- same message twice (a broker redelivery) is one row: the key is the payload's digest.
CREATE TABLE phone_messages (
    device_id       text NOT NULL,
    sub_topic       text NOT NULL,                   -- '' for the base topic, else 'event', ...
    type            text NOT NULL,                   -- the OwnTracks `_type`
    ts              timestamptz NOT NULL,
    payload_sha256  bytea NOT NULL CHECK (octet_length(payload_sha256) = 32),
    payload         text,                            -- the JSON as sent (decrypted); NULL for a fresh location
    encrypted       boolean NOT NULL DEFAULT false,  -- arrived as `_type: encrypted`
    batt            real,                            -- percent; NULL unknown (`-1` in the apps)
    charging        smallint,                        -- `bs`: 0 unknown, 1 unplugged, 2 charging, 3 full
    monitoring      smallint,                        -- `m`: -1 quiet, 0 manual, 1 significant, 2 move
    conn            text,                            -- `conn`: w wifi, m mobile, o offline
    trigger         text,                            -- `t`
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX phone_messages_once ON phone_messages (device_id, sub_topic, payload_sha256);
CREATE INDEX phone_messages_device_ts ON phone_messages (device_id, ts);

-- The phone's payload-encryption key (OwnTracks `encryptionKey`, libsodium secretbox), sealed
-- with TAGWATCH_WEBHOOK_SECRET_KEY like webhook secrets (store/webhook_secrets.py): the
-- database never holds it in clear. NULL: the device has none (tags, or no key configured).
ALTER TABLE devices ADD COLUMN payload_key_sealed text;
