-- Ceremonies, recorded decisions and live checks of delegator contexts.

-- Why a delegation ended is a machine code; whatever words came with it (a
-- revoking caller's reason) go to end_detail. A revocation of before, whose
-- end_reason was the caller's text, keeps that text as its detail.
ALTER TABLE "delegations" ADD COLUMN "end_detail" TEXT NOT NULL DEFAULT '';
UPDATE "delegations" SET "end_detail" = "end_reason", "end_reason" = 'manual_revocation'
 WHERE "state" = 'REVOKED' AND "end_reason" NOT IN ('manual_revocation', 'ttl_elapsed', 'command_limit', 'delegator_ac_revoked', 'parent_delegation_ended', 'creation_failed', 'creation_interrupted', 'caller_gone', 'audit_unavailable', '');

-- The GSAP context at the root of each delegation's chain: the delegator's own
-- for a delegation a human made, the root's for one made from a delegated context.
ALTER TABLE "delegations" ADD COLUMN "root_ac_id" TEXT NOT NULL DEFAULT '';
UPDATE "delegations" SET "root_ac_id" = "delegator_ac_id" WHERE "depth" <= 1;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 2;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 3;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 4;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 5;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 6;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 7;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 8;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 9;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 10;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 11;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 12;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 13;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 14;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 15;
UPDATE "delegations" SET "root_ac_id" = COALESCE((SELECT p."root_ac_id" FROM "delegations" p WHERE p."delegated_ac_id" = "delegations"."delegator_ac_id" AND p."delegated_ac_id" <> ''), '') WHERE "depth" = 16;
CREATE INDEX "delegations_root_ac_id_state_idx" ON "delegations"("root_ac_id", "state");

-- Who caused each event (a DID, client:<id>, or '' for the broker), and what a
-- ceremony or decision event carries beyond the delegation (JSON).
ALTER TABLE "delegation_events" ADD COLUMN "actor" TEXT NOT NULL DEFAULT '';
ALTER TABLE "delegation_events" ADD COLUMN "detail" TEXT NOT NULL DEFAULT '';

-- A human's approval of one command of one delegation.
CREATE TABLE "ceremonies" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "delegation_id" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "command" TEXT NOT NULL,
    "command_hash" TEXT NOT NULL,
    "matched_rule" TEXT NOT NULL,
    "request_time" BIGINT NOT NULL,
    "expire_time" BIGINT NOT NULL,
    "decided_by" TEXT NOT NULL DEFAULT '',
    "decide_time" BIGINT,
    "reason" TEXT NOT NULL DEFAULT '',
    "use_time" BIGINT
);
CREATE INDEX "ceremonies_state_expire_time_idx" ON "ceremonies"("state", "expire_time");
CREATE INDEX "ceremonies_delegation_id_idx" ON "ceremonies"("delegation_id");

-- What GSAP last said of each root context with live delegations: checked_time
-- is its last answer, attempt_time the last try.
CREATE TABLE "delegator_contexts" (
    "ac_id" TEXT NOT NULL PRIMARY KEY,
    "principal_did" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "capability_ceiling" TEXT NOT NULL,
    "checked_time" BIGINT NOT NULL,
    "attempt_time" BIGINT NOT NULL,
    "failures" INTEGER NOT NULL DEFAULT 0,
    "last_error" TEXT NOT NULL DEFAULT ''
);
CREATE INDEX "delegator_contexts_checked_time_idx" ON "delegator_contexts"("checked_time");
-- Live delegations of before count as checked now; the first check follows within GSAP_CONTEXT_CACHE_SECONDS.
INSERT INTO "delegator_contexts" ("ac_id", "principal_did", "status", "capability_ceiling", "checked_time", "attempt_time")
SELECT "delegator_ac_id", MIN("delegator_did"), 'active', '', CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT), CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)
  FROM "delegations" WHERE "depth" <= 1 AND "state" IN ('REQUESTED', 'ACTIVE') GROUP BY "delegator_ac_id";

-- Delegated-context requests waiting for GSAP's approval flow.
CREATE TABLE "gsap_approvals" (
    "delegation_id" TEXT NOT NULL PRIMARY KEY,
    "poll_token" TEXT NOT NULL,
    "deadline" BIGINT NOT NULL,
    "next_poll_time" BIGINT NOT NULL,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "last_error" TEXT NOT NULL DEFAULT '',
    "create_time" BIGINT NOT NULL,
    "agent_client_id" TEXT NOT NULL,
    "idp_object_id" TEXT NOT NULL,
    "display_name" TEXT NOT NULL,
    "request_scope" TEXT NOT NULL DEFAULT '',
    "request_id" TEXT NOT NULL DEFAULT ''
);
CREATE INDEX "gsap_approvals_next_poll_time_idx" ON "gsap_approvals"("next_poll_time");
