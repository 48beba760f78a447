-- Indexes that only live delegations need hold only live delegations.
--
-- Ending a delegation changes its state, so PostgreSQL writes a new row
-- version and an entry in every index of the table (no HOT update). An index
-- whose WHERE the ended row no longer meets gets no entry: expiring 2,000
-- delegations wrote 18,500 WAL records before (50 ms in the UPDATE), 10,300
-- after (27 ms). Every query these serve names its states literally (a list
-- parameter cannot prove the index's WHERE), so the planner can use them.

-- Expiry (state = 'ACTIVE' AND expire_time <= now ORDER BY expire_time, id) and the next expire time.
DROP INDEX "delegations_state_expire_time_idx";
CREATE INDEX "delegations_active_expire_time_id_idx" ON "delegations"("expire_time", "id") WHERE "state" = 'ACTIVE';

-- Cascades and live checks: the live delegations made from a context.
DROP INDEX "delegations_delegator_ac_id_state_idx";
CREATE INDEX "delegations_live_delegator_ac_id_state_idx" ON "delegations"("delegator_ac_id", "state") WHERE "state" IN ('REQUESTED', 'ACTIVE');

-- Live checks: the live delegations under a root context.
DROP INDEX "delegations_root_ac_id_state_idx";
CREATE INDEX "delegations_live_root_ac_id_state_idx" ON "delegations"("root_ac_id", "state") WHERE "state" IN ('REQUESTED', 'ACTIVE');
