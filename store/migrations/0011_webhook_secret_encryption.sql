-- Webhook secrets encrypted at rest, and a refused destination visible on its subscription.
--
-- The signing secret moves to `secret_encrypted`: a Fernet token under TAGWATCH_WEBHOOK_SECRET_KEY,
-- a key that lives in the environment of the API and the dispatcher only (store/webhook_secrets.py).
-- This migration cannot encrypt the existing secrets: it runs inside the database, without that
-- key. So `secret` stays, nullable, as the plaintext of rows written before this migration (or
-- straight into the table by a script); the dispatcher encrypts them with its key at start-up
-- and before it sends with one, and clears the plaintext. Every row has one or the other.
ALTER TABLE webhook_subscriptions ADD COLUMN secret_encrypted text;
ALTER TABLE webhook_subscriptions ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE webhook_subscriptions ADD CONSTRAINT webhook_subscriptions_secret_present
    CHECK (secret IS NOT NULL OR secret_encrypted IS NOT NULL);
COMMENT ON COLUMN webhook_subscriptions.secret IS
    'legacy plaintext signing secret: NULL once the dispatcher has encrypted it';
COMMENT ON COLUMN webhook_subscriptions.secret_encrypted IS
    'signing secret, Fernet token under TAGWATCH_WEBHOOK_SECRET_KEY';

-- The dispatcher refuses a destination that is not https outside development or that resolves to
-- a loopback, link-local, private or otherwise internal address (alerts/webhook_destination.py).
-- Such a delivery fails at once; the subscription shows when and why, for the admin, until a
-- later delivery succeeds or its url changes.
ALTER TABLE webhook_subscriptions ADD COLUMN refused_at timestamptz;
ALTER TABLE webhook_subscriptions ADD COLUMN refused_reason text;
