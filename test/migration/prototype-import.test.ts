/**
 * importPrototype against a real broker database of each driver, with the
 * stub registrar (whose listing is the IdP): a prototype database of the
 * prototype's own schema holding every kind of row becomes ACTIVE, ACTIVE
 * then REVOKED (identity missing), ACTIVE then EXPIRED, or is skipped with a
 * reason; the events reach the log (and so the audit outbox and the
 * consequence workers); a dry run writes nothing; a second run imports
 * nothing twice.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventContentId } from "../../src/clients/chronicle/chronicle-event.js";
import { importPrototype } from "../../src/migration/index.js";
import { createStubRegistrar } from "../../src/registrars/stub/stub-registrar.js";
import { openStore } from "../../src/store/open-store.js";
import type { DelegationStore } from "../../src/store/store.js";
import { CommandDecision, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { as, startTestBroker } from "../helpers/broker.js";
import { errorDetailOf } from "../helpers/grpc-client.js";
import { DRIVERS, type TestDatabase, createTestDatabase } from "../helpers/databases.js";
import { IDS, parseTimeOf, scenarioRows, writePrototypeDb } from "./prototype-fixture.js";

const MINUTE = 60_000;

describe.each(DRIVERS)("importPrototype on %s with the stub registrar", (driver) => {
  const now = Date.now();
  const rows = scenarioRows(now, "stub");
  const dir = mkdtempSync(join(tmpdir(), "lpb-proto-"));
  const prototypePath = join(dir, "llm_broker.db");
  let db: TestDatabase;
  let store: DelegationStore;
  // The IdP holds the identities of every live row but identityGone (and of the invalid one).
  const registrar = createStubRegistrar();

  beforeAll(async () => {
    writePrototypeDb(prototypePath, rows);
    for (const id of [IDS.live, IDS.child, IDS.pastExpiry, IDS.budgetSpent, IDS.orphan, IDS.invalid]) {
      await registrar.registerAgent({ delegationId: id, agentType: "claude-code", agentModel: "", delegatorDid: "did:web:x", displayName: "x", expireTime: now + 3600_000 });
    }
    db = await createTestDatabase(driver);
    store = await openStore(db.url, { contentId: eventContentId });
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a dry run reports every decision and writes nothing", async () => {
    const report = await importPrototype({ store, registrar, prototypePath, dryRun: true });
    expect(report.dryRun).toBe(true);
    expect(report.counts).toEqual({
      imported_active: 2,
      imported_revoked_identity_missing: 1,
      imported_ended: 3,
      skipped_ended: 2,
      skipped_existing: 0,
      skipped_invalid: 1,
    });
    expect(await store.headRevision()).toBe(0n);
    for (const id of Object.values(IDS)) expect(await store.get(id)).toBeNull();
  });

  it("imports live delegations ACTIVE with the same id, expire time, budget and references", async () => {
    const report = await importPrototype({ store, registrar, prototypePath });
    expect(report.dryRun).toBe(false);
    expect(report.identityCheck).toBe("stub");
    const byId = new Map(report.items.map((i) => [i.id, i]));
    expect(byId.get(IDS.live)).toMatchObject({ outcome: "imported_active", state: "ACTIVE" });

    const proto = rows.find((r) => r.delegation_id === IDS.live)!;
    const d = (await store.get(IDS.live))!;
    expect(d).toMatchObject({
      id: IDS.live,
      state: "ACTIVE",
      agentType: "claude-code",
      agentModel: "claude-opus-4-6",
      agentDid: proto.agent_did,
      agentClientId: proto.agent_keycloak_client_id,
      idpBackend: "stub",
      idpObjectId: IDS.live,
      delegatorDid: "did:web:guildhouse.dev/user/alice",
      delegatorAcId: "ac-alice-1",
      delegatedAcId: `ac-dev-${IDS.live}`,
      capabilityCeiling: "CAP_MUTATE",
      ceremonyRequiredFor: ["delete", "destroy", "drop"],
      prohibitedCommands: [],
      accordTemplate: "ai-delegation-standard",
      maxCommands: 500,
      commandsExecuted: 12,
      depth: 1,
      rootAcId: "ac-alice-1",
      endTime: null,
      endReason: "",
    });
    expect(d.createTime).toBe(parseTimeOf(proto.created_at));
    expect(d.expireTime).toBe(parseTimeOf(proto.expires_at));
    expect(d.expireTime - now).toBeGreaterThan(49 * MINUTE);
    // Its CREATED record is the one the audit log will receive.
    expect(d.chronicleCid).toMatch(/^sha256:[0-9a-f]{64}$/);

    // An agent's delegation from the live one's delegated context: depth 2, bounded by the same root.
    const child = (await store.get(IDS.child))!;
    expect(child).toMatchObject({ state: "ACTIVE", depth: 2, delegatorAcId: `ac-dev-${IDS.live}`, rootAcId: "ac-alice-1", maxCommands: 50 });
  });

  it("revokes a live delegation whose identity is gone (identity_missing), so its GSAP context is revoked", async () => {
    const d = (await store.get(IDS.identityGone))!;
    expect(d).toMatchObject({
      state: "REVOKED",
      endReason: "identity_missing",
      endDetail: `imported from the prototype: agent client stub-agent-claude-code-${IDS.identityGone} was not found in stub`,
      capabilityCeiling: "CAP_READ",
      ceremonyRequiredFor: [],
    });
    const gsap = await store.pendingEndings("gsap_revoke", 100);
    expect(gsap.items.find((e) => e.delegationId === IDS.identityGone)?.target).toMatchObject({
      delegatedAcId: `ac-dev-${IDS.identityGone}`,
      endReason: "identity_missing",
    });
    const idp = await store.pendingEndings("idp_delete", 100);
    expect(idp.items.map((e) => e.delegationId)).toContain(IDS.identityGone);
  });

  it("ends what the prototype should have ended: past expiry, budget spent, parent ended", async () => {
    expect(await store.get(IDS.pastExpiry)).toMatchObject({ state: "EXPIRED", endReason: "ttl_elapsed", commandsExecuted: 3 });
    expect(await store.get(IDS.budgetSpent)).toMatchObject({ state: "EXPIRED", endReason: "command_limit", commandsExecuted: 500 });
    expect(await store.get(IDS.orphan)).toMatchObject({ state: "REVOKED", endReason: "parent_delegation_ended" });
    const past = (await store.get(IDS.pastExpiry))!;
    expect(past.expireTime).toBeLessThan(now);
    // Their identities and contexts are cleaned up by the workers when the broker runs.
    const gsap = await store.pendingEndings("gsap_revoke", 100);
    expect(gsap.items.map((e) => e.delegationId).sort()).toEqual([IDS.identityGone, IDS.orphan, IDS.pastExpiry, IDS.budgetSpent].sort());
  });

  it("writes one CREATED event per import and one ending event per ending, in revision order", async () => {
    const events = await store.readEvents(0n, 100);
    const created = events.filter((e) => e.type === "CREATED").map((e) => e.delegation.id);
    expect(created.sort()).toEqual([IDS.live, IDS.child, IDS.identityGone, IDS.pastExpiry, IDS.budgetSpent, IDS.orphan].sort());
    const endings = events.filter((e) => e.type !== "CREATED").map((e) => [e.delegation.id, e.type, e.reason]);
    expect(endings).toEqual(
      expect.arrayContaining([
        [IDS.identityGone, "REVOKED", "identity_missing"],
        [IDS.pastExpiry, "EXPIRED", "ttl_elapsed"],
        [IDS.budgetSpent, "EXPIRED", "command_limit"],
        [IDS.orphan, "REVOKED", "parent_delegation_ended"],
      ]),
    );
    expect(endings).toHaveLength(4);
    // The audit outbox delivers them all (nothing is marked delivered by the import).
    expect((await store.pendingAudit(100)).length).toBe(events.length);
    const times = events.map((e) => e.eventTime);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
  });

  it("skips ended history and invalid rows, naming why", async () => {
    const report = await importPrototype({ store, registrar, prototypePath, dryRun: true });
    const byId = new Map(report.items.map((i) => [i.id, i]));
    expect(byId.get(IDS.revoked)).toMatchObject({ outcome: "skipped_ended", prototypeStatus: "revoked", reason: "manual_revocation" });
    expect(byId.get(IDS.expired)).toMatchObject({ outcome: "skipped_ended", prototypeStatus: "expired", reason: "command_limit" });
    expect(await store.get(IDS.revoked)).toBeNull();
    const invalid = byId.get(IDS.invalid)!;
    expect(invalid.outcome).toBe("skipped_invalid");
    expect(invalid.detail).toContain("agent_type");
    expect(invalid.detail).toContain('capability_ceiling: "CAP_ROOT" is not one of CAPABILITY_ORDER');
    expect(invalid.detail).toContain("max_commands: must be an integer");
    expect(await store.get(IDS.invalid)).toBeNull();
    // What still needs a person: the invalid live row's authority, the revoked row's context.
    expect(report.warnings.some((w) => w.startsWith(IDS.invalid) && w.includes("managed by nobody"))).toBe(true);
    expect(report.warnings.some((w) => w.startsWith(IDS.revoked) && w.includes(`ac-dev-${IDS.revoked} may be live at GSAP`))).toBe(true);
  });

  it("a second run imports nothing twice and reports what it skipped", async () => {
    const head = await store.headRevision();
    const report = await importPrototype({ store, registrar, prototypePath });
    expect(report.counts).toEqual({
      imported_active: 0,
      imported_revoked_identity_missing: 0,
      imported_ended: 0,
      skipped_ended: 2,
      skipped_existing: 6,
      skipped_invalid: 1,
    });
    expect(report.items.find((i) => i.id === IDS.identityGone)).toMatchObject({ outcome: "skipped_existing", state: "REVOKED" });
    expect(await store.headRevision()).toBe(head);
  });

  it("serves the imported delegations by their prototype ids through gRPC: get, list pages, authorize, revoke", async () => {
    await store.close();
    const t = await startTestBroker({ db });
    try {
      const alice = as("did:web:guildhouse.dev/user/alice");
      const live = (await t.grpc.unary("getDelegation", { delegationId: IDS.live }, alice)).delegation!;
      expect([live.state, live.commandsExecuted, live.maxCommands]).toEqual([DelegationState.ACTIVE, 12, 500]);
      // Page tokens carry the prototype's ids too.
      const seen: string[] = [];
      let pageToken = "";
      do {
        const page = await t.grpc.unary("listAgents", { pageSize: 1, pageToken }, alice);
        seen.push(...page.delegations.map((d) => d.delegationId));
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      expect(seen).toContain(IDS.live);
      expect(new Set(seen).size).toBe(seen.length);
      const allowed = await t.grpc.unary("authorizeCommand", { delegationId: IDS.live, command: "git status" }, alice);
      expect([allowed.decision, allowed.commandsRemaining]).toEqual([CommandDecision.ALLOW, 487]);
      const revoked = (await t.grpc.unary("revokeDelegation", { delegationId: IDS.live, reason: "migrated" }, alice)).delegation!;
      expect([revoked.state, revoked.endReason, revoked.endDetail]).toEqual([DelegationState.REVOKED, "manual_revocation", "migrated"]);
      // An id of neither form is still refused by name.
      const refused = await t.grpc.unary("getDelegation", { delegationId: "del-XYZ" }, alice).catch((e: unknown) => e);
      expect(errorDetailOf(refused)).toMatchObject({ reason: "INVALID_FIELD", field: "delegation_id" });
    } finally {
      await t.close();
      store = await openStore(db.url, { contentId: eventContentId });
    }
  });
});
