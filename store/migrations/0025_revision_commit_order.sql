-- Zone and subject revisions in commit order.
--
-- Ingest catches up with `WHERE revision > last_seen` (store/engine_repository.py). A sequence
-- hands out values in the order transactions ask, not the order they commit: a zone drawn in a
-- transaction that took revision 100 and committed after another took 101 and committed was
-- never seen by a running ingest (it had moved past 101), and since ingest keeps a snapshot of
-- its catalogue across restarts (ingest/index_snapshot.py) such a zone would stay unseen until
-- it changed again. So a revision is drawn only under a transaction-level advisory lock that is
-- held until commit: the transaction holding revision R commits before any other can draw R+1,
-- and every reader that sees R+1 also sees R. Zone and subject writes are operator actions
-- (seconds apart), so serializing their commits costs nothing a person can notice.
--
-- The trigger's name sorts after the other BEFORE triggers of both tables, so it sees the
-- revision they set and re-draws it under the lock.
CREATE FUNCTION revision_in_commit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.revision IS DISTINCT FROM OLD.revision THEN
        PERFORM pg_advisory_xact_lock(hashtext('tagwatch.zone_revision'));
        NEW.revision := nextval('zone_revision');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER zz_revision_in_commit_order BEFORE INSERT OR UPDATE ON zones
    FOR EACH ROW EXECUTE FUNCTION revision_in_commit_order();
CREATE TRIGGER zz_revision_in_commit_order BEFORE INSERT OR UPDATE ON subjects
    FOR EACH ROW EXECUTE FUNCTION revision_in_commit_order();
