-- HTTP intake (issue 15): phones that post over HTTP instead of MQTT.
--
-- 1. devices.http_secret_sha256: SHA-256 of the device's secret, written at registration, so
--    the API can authenticate a device's HTTP request. For tags and OwnTracks phones the secret
--    is the MQTT password `device add` shows once (the broker keeps its own hash of it in its
--    dynamic-security file, which the API cannot query), so an OwnTracks app in HTTP mode uses
--    the same user name and password as in MQTT mode. For an OsmAnd phone (Traccar Client) it
--    is the token of its server URL. The secrets are 144 bits of randomness: a fast hash is
--    enough at rest (there is nothing to brute-force; argon2 protects human passwords), and
--    checking one costs microseconds on a request a phone sends every minute. NULL for devices
--    registered before this migration: they cannot post over HTTP until re-registered.
-- 2. devices.osmand: the phone speaks Traccar Client's OsmAnd protocol over HTTP only. It has no
--    OwnTracks topic and no broker account. A tag is never one; every other phone has its
--    OwnTracks topic, as before.

ALTER TABLE devices ADD COLUMN http_secret_sha256 bytea
    CHECK (http_secret_sha256 IS NULL OR octet_length(http_secret_sha256) = 32);
ALTER TABLE devices ADD COLUMN osmand boolean NOT NULL DEFAULT false;

ALTER TABLE devices DROP CONSTRAINT devices_check;
ALTER TABLE devices ADD CONSTRAINT devices_topic_fits_kind CHECK (
    CASE WHEN kind = 'tag' THEN owntracks_topic IS NULL AND NOT osmand
         ELSE (owntracks_topic IS NULL) = osmand END
);
