-- The notification dispatcher: wake it the moment deliveries are committed.
--
-- A statement that inserts deliveries (the engine's enqueue, one per outbox row) notifies
-- channel 'tagwatch_deliveries'; PostgreSQL sends the notification only when the transaction
-- commits, and folds identical ones of one transaction into one. Dispatchers LISTEN on it and
-- also poll about once a second, so a missed notification (dispatcher reconnecting) costs at
-- most a poll interval, never a delivery.
CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tagwatch_deliveries', '');
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();

