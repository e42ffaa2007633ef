-- Least privilege: each process connects with its own role (store/roles.py grants them after
-- every migration). The API may append to the audit log but not change it; the chain's head
-- and the hashes of a new row are written by the append trigger with its owner's rights, so no
-- process role needs (or has) UPDATE on audit_log or any right on audit_chain_head.
ALTER FUNCTION audit_chain_append() SECURITY DEFINER SET search_path = public, pg_temp;
