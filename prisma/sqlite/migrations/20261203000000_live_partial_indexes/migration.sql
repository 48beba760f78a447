-- Indexes that only live delegations need hold only live delegations.
--
-- Ending a delegation changes its state, and so an entry in every index that
-- holds the state; an index whose WHERE the ended row no longer meets drops
-- its entry and writes none. SQLite uses a partial index only for a query
-- that repeats the index's WHERE term as it is written, so here only the
-- expiry index is partial (its queries say "state" = 'ACTIVE'); PostgreSQL's
-- migration of the same name makes the cascade and live-check indexes
-- partial too.

-- Expiry (state = 'ACTIVE' AND expire_time <= now ORDER BY expire_time, id) and the next expire time.
-- The state leads, as before: without statistics SQLite prefers an index whose
-- first column the query fixes, and would otherwise search (state, id) and sort.
DROP INDEX "delegations_state_expire_time_idx";
CREATE INDEX "delegations_active_expire_time_id_idx" ON "delegations"("state", "expire_time", "id") WHERE "state" = 'ACTIVE';
