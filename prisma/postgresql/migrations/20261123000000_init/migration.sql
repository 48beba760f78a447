-- CreateTable
CREATE TABLE "delegations" (
    "id" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "agent_type" TEXT NOT NULL,
    "agent_model" TEXT NOT NULL,
    "agent_did" TEXT NOT NULL,
    "agent_client_id" TEXT NOT NULL,
    "idp_object_id" TEXT NOT NULL,
    "idp_backend" TEXT NOT NULL,
    "delegator_did" TEXT NOT NULL,
    "delegator_ac_id" TEXT NOT NULL,
    "delegated_ac_id" TEXT NOT NULL,
    "delegated_ac" TEXT NOT NULL,
    "capability_ceiling" TEXT NOT NULL,
    "ceremony_required_for" TEXT NOT NULL,
    "prohibited_commands" TEXT NOT NULL,
    "inherit_corpus" BOOLEAN NOT NULL,
    "inherit_contexts" BOOLEAN NOT NULL,
    "accord_template" TEXT NOT NULL,
    "max_commands" INTEGER NOT NULL,
    "commands_executed" INTEGER NOT NULL,
    "depth" INTEGER NOT NULL,
    "create_time" BIGINT NOT NULL,
    "update_time" BIGINT NOT NULL,
    "expire_time" BIGINT NOT NULL,
    "end_time" BIGINT,
    "end_reason" TEXT NOT NULL,
    "chronicle_cid" TEXT NOT NULL,
    "idp_cleanup_pending" BOOLEAN NOT NULL,

    CONSTRAINT "delegations_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "delegation_events" (
    "revision" BIGINT NOT NULL,
    "delegation_id" TEXT NOT NULL,
    "delegator_did" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "event_time" BIGINT NOT NULL,
    "reason" TEXT NOT NULL,
    "snapshot" TEXT NOT NULL,

    CONSTRAINT "delegation_events_pkey" PRIMARY KEY ("revision")
);

-- CreateTable
CREATE TABLE "broker_meta" (
    "key" TEXT NOT NULL,
    "value" BIGINT NOT NULL,

    CONSTRAINT "broker_meta_pkey" PRIMARY KEY ("key")
);

-- CreateTable
CREATE TABLE "idempotency_keys" (
    "scope" TEXT NOT NULL,
    "method" TEXT NOT NULL,
    "request_id" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "delegation_id" TEXT NOT NULL,
    "response" TEXT,
    "create_time" BIGINT NOT NULL,
    CONSTRAINT "idempotency_keys_pkey" PRIMARY KEY ("scope","method","request_id")
);

-- CreateIndex
CREATE INDEX "delegations_state_expire_time_idx" ON "delegations"("state", "expire_time");

-- CreateIndex
CREATE INDEX "delegations_delegator_did_state_id_idx" ON "delegations"("delegator_did", "state", "id");

-- CreateIndex
CREATE INDEX "delegations_state_id_idx" ON "delegations"("state", "id");

-- CreateIndex
CREATE INDEX "delegations_delegator_ac_id_state_idx" ON "delegations"("delegator_ac_id", "state");

-- CreateIndex
CREATE INDEX "delegations_delegated_ac_id_idx" ON "delegations"("delegated_ac_id");

-- CreateIndex
CREATE INDEX "delegations_idp_cleanup_pending_idx" ON "delegations"("idp_cleanup_pending");

-- CreateIndex
CREATE INDEX "delegation_events_delegation_id_revision_idx" ON "delegation_events"("delegation_id", "revision");

-- CreateIndex
CREATE INDEX "idempotency_keys_create_time_idx" ON "idempotency_keys"("create_time");

-- Seed: the head of the event log and the revision below which events were pruned.
INSERT INTO "broker_meta" ("key", "value") VALUES ('revision', 0), ('pruned_through', 0);
