-- Audit outbox: delivery state of each event to the audit sink (Chronicle).
-- Existing events start pending, so history recorded before Chronicle was
-- configured is delivered too.

-- AlterTable
ALTER TABLE "delegation_events" ADD COLUMN "chronicle_cid" TEXT NOT NULL DEFAULT '';
ALTER TABLE "delegation_events" ADD COLUMN "audit_state" TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE "delegation_events" ADD COLUMN "audit_attempts" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "delegation_events" ADD COLUMN "audit_time" BIGINT;
ALTER TABLE "delegation_events" ADD COLUMN "audit_error" TEXT NOT NULL DEFAULT '';

-- CreateTable
CREATE TABLE "broker_leases" (
    "name" TEXT NOT NULL PRIMARY KEY,
    "holder" TEXT NOT NULL,
    "expire_time" BIGINT NOT NULL
);

-- CreateIndex
CREATE INDEX "delegation_events_audit_state_revision_idx" ON "delegation_events"("audit_state", "revision");
