/**
 * importPrototype with the real Keycloak registrar against the Keycloak fake,
 * whose clients were registered the way the prototype's keycloak.py did
 * (clientId agent-<type>-<id>, attributes agent_type / delegator_did /
 * delegation_id, no llm_broker_governed). The registrar's own listing does
 * not see them; the clientId lookup does, read-only, and records each
 * client's UUID, so the broker's clean-up deletes the prototype's client when
 * the imported delegation ends.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventContentId } from "../../src/clients/chronicle/chronicle-event.js";
import { HttpClient } from "../../src/clients/http/http-client.js";
import { createKeycloakClientLookup, importPrototype } from "../../src/migration/index.js";
import { openStore } from "../../src/store/open-store.js";
import type { DelegationStore } from "../../src/store/store.js";
import { type KeycloakHarness, startKeycloakHarness } from "../fakes/keycloak-fake.js";
import { DRIVERS, type TestDatabase, createTestDatabase } from "../helpers/databases.js";
import { IDS, registerLikePrototype, scenarioRows, writePrototypeDb } from "./prototype-fixture.js";

describe.each(DRIVERS)("importPrototype on %s with the Keycloak registrar", (driver) => {
  const now = Date.now();
  const rows = scenarioRows(now, "keycloak");
  const dir = mkdtempSync(join(tmpdir(), "lpb-proto-kc-"));
  const prototypePath = join(dir, "llm_broker.db");
  let kc: KeycloakHarness;
  let lookupHttp: HttpClient;
  let lookup: ReturnType<typeof createKeycloakClientLookup>;
  let db: TestDatabase;
  let store: DelegationStore;

  beforeAll(async () => {
    writePrototypeDb(prototypePath, rows);
    kc = await startKeycloakHarness();
    // The prototype registered a client for every delegation it created; identityGone's was deleted since.
    for (const r of rows) if (r.status === "active" && r.delegation_id !== IDS.identityGone && r.delegation_id !== IDS.invalid) await registerLikePrototype(kc.fake, r);
    lookupHttp = new HttpClient({ system: "keycloak", timeoutMs: 2_000, deadlineMs: 5_000, maxRetries: 1, minBackoffMs: 5, maxBackoffMs: 20 });
    lookup = createKeycloakClientLookup({ url: kc.fake.url, realm: kc.fake.realm, adminClientId: kc.fake.adminClientId, adminClientSecret: kc.fake.adminClientSecret, http: lookupHttp });
    db = await createTestDatabase(driver);
    store = await openStore(db.url, { contentId: eventContentId });
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
    await lookup?.close();
    await lookupHttp?.close();
    await kc?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the registrar's listing alone does not see the prototype's clients", async () => {
    const report = await importPrototype({ store, registrar: kc.registrar, prototypePath, dryRun: true });
    expect(report.items.find((i) => i.id === IDS.live)).toMatchObject({ outcome: "imported_revoked_identity_missing" });
    expect(report.counts.imported_active).toBe(0);
  });

  it("finds them by clientId: live delegations ACTIVE with the client's UUID, the one without a client revoked", async () => {
    const report = await importPrototype({ store, registrar: kc.registrar, lookups: [lookup], prototypePath });
    expect(report.identityCheck).toBe("keycloak");
    expect(report.counts).toMatchObject({ imported_active: 2, imported_revoked_identity_missing: 1, imported_ended: 3, skipped_ended: 2, skipped_invalid: 1 });
    const clientId = `agent-claude-code-${IDS.live}`;
    expect(await store.get(IDS.live)).toMatchObject({
      state: "ACTIVE",
      agentClientId: clientId,
      idpBackend: "keycloak",
      idpObjectId: kc.fake.client(clientId)!.id,
    });
    expect(await store.get(IDS.child)).toMatchObject({ state: "ACTIVE", idpObjectId: kc.fake.client(`agent-claude-code-${IDS.child}`)!.id });
    expect(await store.get(IDS.identityGone)).toMatchObject({ state: "REVOKED", endReason: "identity_missing" });
    expect(report.items.find((i) => i.id === IDS.identityGone)?.detail).toBe(`agent client agent-claude-code-${IDS.identityGone} was not found in keycloak`);
    // Read-only: the import created, changed and deleted nothing in Keycloak.
    for (const route of ["delete", "regenerateSecret", "invalidateRotatedSecret"] as const) expect(kc.fake.requestsTo(route)).toHaveLength(0);
    expect(kc.fake.requestsTo("create")).toHaveLength(5);
  });

  it("when an imported delegation ends, the broker's clean-up deletes the prototype's client", async () => {
    const clientId = `agent-claude-code-${IDS.live}`;
    await store.end({ target: { ids: [IDS.live] }, ending: "revoke", reason: "manual_revocation", now: Date.now(), cascade: false });
    const pending = await store.pendingEndings("idp_delete", 100);
    const effect = pending.items.find((e) => e.delegationId === IDS.live)!;
    // What the idp-cleanup worker does with it (background.ts).
    await kc.registrar.deleteAgent({ delegationId: effect.delegationId, clientId: effect.target.agentClientId, objectId: effect.target.idpObjectId });
    expect(kc.fake.client(clientId)).toBeUndefined();
  });

  it("a client of that name tagged with another delegation is not the delegation's identity", async () => {
    const impostor = rows.find((r) => r.delegation_id === IDS.identityGone)!;
    kc.fake.seedClient({ clientId: impostor.agent_keycloak_client_id!, attributes: { delegation_id: "del-99999999" } });
    expect(await lookup.find({ delegationId: IDS.identityGone, clientId: impostor.agent_keycloak_client_id! })).toBeUndefined();
  });

  it("without a recorded clientId, finds the client by its delegation_id attribute", async () => {
    const found = await lookup.find({ delegationId: IDS.child, clientId: "" });
    expect(found).toEqual({ delegationId: IDS.child, clientId: `agent-claude-code-${IDS.child}`, objectId: kc.fake.client(`agent-claude-code-${IDS.child}`)!.id });
  });
});
