-- The scenario clock waits for the player.
--
-- A replay maps wall time onto scenario time (`origin`, `wall_origin`, `speed`). When the player
-- falls behind that mapping (a busy machine, a stall of a second at 600x is ten scenario minutes)
-- the rules used to see the scenario's devices fall silent although nothing was ever withheld
-- from them, and raised no_communication. The player now writes how far it has published
-- (`played_until`: everything before it is out); the rules' clock is the earlier of the mapping
-- and that mark. NULL (a live platform has no row at all; a replay past its last step) leaves the
-- mapping alone.
ALTER TABLE rule_clock ADD COLUMN played_until timestamptz;
