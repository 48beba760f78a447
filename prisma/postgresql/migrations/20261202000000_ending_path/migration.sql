-- The ending path. The consequences of every ending (delete the IdP identity,
-- revoke the GSAP context) and its delivery to the audit log are derived from
-- the event log: each has a cursor in broker_meta (the last revision it has
-- settled), so nothing is written per ending beyond its event. Items that
-- fail wait in delegation_effects with their next attempt time; items an
-- external system refuses for good stay there as rejected.

-- CreateTable
CREATE TABLE "delegation_effects" (
    "id" BIGSERIAL NOT NULL,
    "kind" TEXT NOT NULL,
    "delegation_id" TEXT NOT NULL,
    "revision" BIGINT NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'pending',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_time" BIGINT NOT NULL,
    "last_error" TEXT NOT NULL DEFAULT '',
    "create_time" BIGINT NOT NULL,
    "update_time" BIGINT NOT NULL,

    CONSTRAINT "delegation_effects_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "delegation_effects_kind_state_next_attempt_time_idx" ON "delegation_effects"("kind", "state", "next_attempt_time");

-- The consequence cursors start at the head: earlier endings are handled below.
INSERT INTO "broker_meta" ("key", "value") SELECT 'cursor:idp_delete', "value" FROM "broker_meta" WHERE "key" = 'revision';
INSERT INTO "broker_meta" ("key", "value") SELECT 'cursor:gsap_revoke', "value" FROM "broker_meta" WHERE "key" = 'revision';

-- The audit cursor stops before the first event still pending delivery.
INSERT INTO "broker_meta" ("key", "value") VALUES ('cursor:audit', COALESCE(
    (SELECT MIN("revision") - 1 FROM "delegation_events" WHERE "audit_state" = 'pending'),
    (SELECT "value" FROM "broker_meta" WHERE "key" = 'revision')));
INSERT INTO "broker_meta" ("key", "value") VALUES ('audit_rejected', (SELECT COUNT(*) FROM "delegation_events" WHERE "audit_state" = 'rejected'));

-- Identities still awaiting deletion become retries, due now.
INSERT INTO "delegation_effects" ("kind", "delegation_id", "revision", "next_attempt_time", "create_time", "update_time")
SELECT 'idp_delete', "id", 0, "update_time", "update_time", "update_time" FROM "delegations" WHERE "idp_cleanup_pending";

-- Delegated contexts of ended delegations that GSAP may still honour were never revoked: revoke them now.
INSERT INTO "delegation_effects" ("kind", "delegation_id", "revision", "next_attempt_time", "create_time", "update_time")
SELECT 'gsap_revoke', "id", 0, "update_time", "update_time", "update_time" FROM "delegations"
 WHERE "state" IN ('EXPIRED', 'REVOKED', 'FAILED') AND "delegated_ac_id" <> ''
   AND "expire_time" > (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT;

-- DropIndex
DROP INDEX "delegations_idp_cleanup_pending_idx";

-- AlterTable
ALTER TABLE "delegations" DROP COLUMN "idp_cleanup_pending";

-- Delivery is tracked by the cursor; audit_state now only records refusals.
-- DropIndex
DROP INDEX "delegation_events_audit_state_revision_idx";

-- A CreateDelegation answer is handed out once: response_time is when it was
-- stored, answered_time when a caller received it. A stored answer nobody
-- received (the broker died after the commit) is handed out by the retry,
-- with a new secret. Answers stored before this are taken as received.
ALTER TABLE "idempotency_keys" ADD COLUMN "response_time" BIGINT;
ALTER TABLE "idempotency_keys" ADD COLUMN "answered_time" BIGINT;
UPDATE "idempotency_keys" SET "response_time" = "create_time", "answered_time" = "create_time" WHERE "response" IS NOT NULL;
