-- Commands to devices (issue 15): what an operator or the pursuit policy asked a device to do,
-- and how far it got.
--
-- state: queued (waiting to be sent; `not_before` may hold it back) -> sent (the broker took it,
-- or a phone's HTTP answer carried it) -> acknowledged | failed (the device's answer on
-- em/v1/{id}/ack) | expired (not sent or not answered before `expires_at`); cancelled: the
-- platform withdrew a queued command (a pursuit's scheduled return superseded by a newer one).
-- OwnTracks apps never answer a command: a phone's command ends at `sent`.
CREATE TABLE device_commands (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    text NOT NULL REFERENCES devices (id),
    type         text NOT NULL CHECK (type IN
                     ('locate_now', 'set_interval', 'vibrate', 'beep', 'message',
                      'set_configuration')),
    args         jsonb NOT NULL DEFAULT '{}'::jsonb,
    state        text NOT NULL DEFAULT 'queued' CHECK (state IN
                     ('queued', 'sent', 'acknowledged', 'failed', 'expired', 'cancelled')),
    origin       text NOT NULL,            -- 'user:<name>' or 'pursuit'
    alert_id     bigint REFERENCES alerts (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    not_before   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    sent_at      timestamptz,
    last_sent_at timestamptz,              -- a sent command is published again until answered
    send_count   integer NOT NULL DEFAULT 0,
    channel      text CHECK (channel IN ('mqtt', 'http')),
    answered_at  timestamptz,              -- acknowledged or failed: when the answer was stored
    device_ts    timestamptz,              -- the device's own time in its answer
    expired_at   timestamptz,
    detail       text,
    CHECK (expires_at > created_at)
);
CREATE INDEX device_commands_device ON device_commands (device_id, id);
-- What the sender looks at: commands still in flight.
CREATE INDEX device_commands_open ON device_commands (not_before)
    WHERE state IN ('queued', 'sent');

-- Alert transitions that start or end a pursuit, written by the alert's own transaction
-- (store.engine_repository.enqueue) and consumed, exactly once, by the command sender in the
-- dispatcher, which turns them into set_interval commands (store.commands.take_pursuit_triggers).
CREATE TABLE pursuit_triggers (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id   bigint NOT NULL REFERENCES alerts (id),
    event      text NOT NULL CHECK (event IN ('opened', 'cleared', 'resolved')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Wake the sender at commit, as deliveries wake the dispatcher (migration 0003).
CREATE FUNCTION device_commands_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tagwatch_commands', '');
    RETURN NULL;
END $$;
CREATE TRIGGER device_commands_notify AFTER INSERT ON device_commands
    FOR EACH STATEMENT EXECUTE FUNCTION device_commands_notify();
CREATE TRIGGER pursuit_triggers_notify AFTER INSERT ON pursuit_triggers
    FOR EACH STATEMENT EXECUTE FUNCTION device_commands_notify();
