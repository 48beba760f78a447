/**
 * One contract, every registrar: what the delegation use cases rely on from
 * an identity provider driver, proved against the stub and the loopback
 * fakes of Keycloak and Entra.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newDelegationId } from "../../src/delegation/ids.js";
import type { AgentRegistrar, RegisterAgentRequest } from "../../src/registrars/registrar.js";
import { createStubRegistrar } from "../../src/registrars/stub/stub-registrar.js";
import { startEntraHarness } from "../fakes/entra-fake.js";
import { startKeycloakHarness } from "../fakes/keycloak-fake.js";

interface Harness {
  registrar: AgentRegistrar;
  /** What the identity provider holds. */
  identities(): Promise<{ delegationId: string; clientId: string }[]>;
  /**
   * Whether the identity provider accepts this secret for the client now (a
   * client_credentials sign-in). Absent for the stub: nothing checks its secrets.
   */
  secretWorks?(clientId: string, secret: string): Promise<boolean>;
  close(): Promise<void>;
}

async function stubHarness(): Promise<Harness> {
  const registrar = createStubRegistrar();
  return {
    registrar,
    identities: async () => [...registrar.registered].map(([delegationId, clientId]) => ({ delegationId, clientId })),
    close: () => registrar.close(),
  };
}

export const HARNESSES: [string, () => Promise<Harness>, { secret: boolean }][] = [
  ["stub", stubHarness, { secret: true }],
  ["keycloak", () => startKeycloakHarness(), { secret: true }],
  ["entra (application)", () => startEntraHarness(), { secret: true }],
  // Agent identities have no password of their own: the runtime gets tokens through the blueprint.
  ["entra (agent identity blueprint)", () => startEntraHarness({ blueprint: true }), { secret: false }],
];

function request(overrides: Partial<RegisterAgentRequest> = {}): RegisterAgentRequest {
  return {
    delegationId: newDelegationId(),
    agentType: "claude-code",
    agentModel: "opus",
    delegatorDid: "did:web:example.com/user/alice",
    displayName: "claude-code (delegated by alice)",
    expireTime: Date.now() + 3600_000,
    ...overrides,
  };
}

describe.each(HARNESSES)("AgentRegistrar contract: %s", (_name, start, traits) => {
  let h: Harness;
  beforeAll(async () => {
    h = await start();
  });
  afterAll(async () => {
    await h?.close();
  });

  const held = async (delegationId: string) => (await h.identities()).filter((i) => i.delegationId === delegationId);
  const listed = async (delegationId: string) => {
    const out = [];
    for await (const ref of h.registrar.listAgents()) if (ref.delegationId === delegationId) out.push(ref);
    return out;
  };

  it("registers one identity per delegation, tagged with its delegation id, and lists it", async () => {
    const req = request();
    const id = await h.registrar.registerAgent(req);
    expect(id.clientId).not.toBe("");
    expect(id.objectId).not.toBe("");
    expect(id.displayName).toBe(req.displayName);
    if (traits.secret) expect(id.clientSecret.length).toBeGreaterThanOrEqual(16);
    expect(await held(req.delegationId)).toEqual([{ delegationId: req.delegationId, clientId: id.clientId }]);
    expect((await listed(req.delegationId)).map((r) => r.clientId)).toEqual([id.clientId]);
  });

  it("deletes by reference, and deleting again is not an error", async () => {
    const req = request();
    const id = await h.registrar.registerAgent(req);
    const ref = { delegationId: req.delegationId, clientId: id.clientId, objectId: id.objectId };
    await h.registrar.deleteAgent(ref);
    expect(await held(req.delegationId)).toEqual([]);
    await h.registrar.deleteAgent(ref);
    expect(await listed(req.delegationId)).toEqual([]);
  });

  it("finds and deletes an identity known only by its delegation id (a crash lost the client id)", async () => {
    const req = request();
    await h.registrar.registerAgent(req);
    await h.registrar.deleteAgent({ delegationId: req.delegationId, clientId: "", objectId: "" });
    expect(await held(req.delegationId)).toEqual([]);
  });

  it("rotates the secret: a new one, accepted by the identity provider, and the previous one refused", async () => {
    const req = request();
    const id = await h.registrar.registerAgent(req);
    const other = await h.registrar.registerAgent(request());
    const rotated = await h.registrar.rotateSecret({ delegationId: req.delegationId, clientId: id.clientId, objectId: id.objectId });
    if (!traits.secret) {
      expect(rotated).toBeUndefined(); // no secret of its own to replace
      return;
    }
    expect(rotated).toEqual(expect.any(String));
    expect(rotated!.length).toBeGreaterThanOrEqual(16);
    expect(rotated).not.toBe(id.clientSecret);
    if (h.secretWorks) {
      expect(await h.secretWorks(id.clientId, rotated!)).toBe(true);
      expect(await h.secretWorks(id.clientId, id.clientSecret)).toBe(false);
      expect(await h.secretWorks(other.clientId, other.clientSecret)).toBe(true);
    }
    const again = await h.registrar.rotateSecret({ delegationId: req.delegationId, clientId: id.clientId, objectId: id.objectId });
    expect(again).not.toBe(rotated);
    if (h.secretWorks) expect(await h.secretWorks(id.clientId, rotated!)).toBe(false);
  });

  it("treats deleting an identity that never existed as done, and touches no other delegation's", async () => {
    const other = request();
    const kept = await h.registrar.registerAgent(other);
    await h.registrar.deleteAgent({ delegationId: newDelegationId(), clientId: "", objectId: "" });
    expect(await held(other.delegationId)).toEqual([{ delegationId: other.delegationId, clientId: kept.clientId }]);
  });
});
