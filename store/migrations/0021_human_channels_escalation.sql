-- Human notification channels (Apprise URLs: e-mail, SMS gateways, Telegram, Matrix, ...) and
-- the escalation of alerts nobody acknowledges (issue 16, items 5 and 6).
--
-- A channel's Apprise URL carries its credentials (an SMTP password, a bot token), so it is
-- stored sealed, like a webhook secret (a Fernet token under TAGWATCH_WEBHOOK_SECRET_KEY, a key
-- the database never sees: store/webhook_secrets.py); `url_shown` is Apprise's own privacy form
-- of it (passwords and tokens masked), for the admin to recognise it. `role` is the most a
-- message to it may show (alerts/human_message.py): `tracer` and `operator` never get a victim's
-- alert nor a position near a victim; `supervisor` gets what a supervisor reads. An
-- `escalation` channel is a supervisor's: it receives only the `escalated` events.
CREATE TABLE notification_channels (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL,
    url_sealed     text NOT NULL,
    url_shown      text NOT NULL,
    scheme         text NOT NULL,
    regions        text[] NOT NULL DEFAULT '{*}',
    types          text[] NOT NULL DEFAULT '{*}',
    min_severity   text NOT NULL DEFAULT 'info'
        CHECK (min_severity IN ('info', 'warning', 'critical')),
    role           text NOT NULL DEFAULT 'tracer'
        CHECK (role IN ('tracer', 'operator', 'supervisor')),
    escalation     boolean NOT NULL DEFAULT false,
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    refused_at     timestamptz,
    refused_reason text
);
COMMENT ON COLUMN notification_channels.url_sealed IS
    'Apprise URL, Fernet token under TAGWATCH_WEBHOOK_SECRET_KEY';

-- An alert still `open` past its severity's acknowledgement deadline (settings
-- ack_deadline_<severity>_s, counted from raised_at) is escalated once: this column is set in
-- the statement that claims it (store/escalations.py), so two dispatchers cannot both escalate.
ALTER TABLE alerts ADD COLUMN ack_escalated_at timestamptz;
CREATE INDEX alerts_unacknowledged ON alerts (raised_at)
    WHERE status = 'open' AND ack_escalated_at IS NULL;
