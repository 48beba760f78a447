/**
 * The Entra registrar against a loopback Entra (HTTPS login + Graph servers):
 * what it creates, how it rotates and deletes, and how it fails.
 */
import { randomUUID } from "node:crypto";
import { inspect } from "node:util";
import { Agent, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { HttpClient, UpstreamError } from "../../src/clients/http/http-client.js";
import { createLogger } from "../../src/logging.js";
import { createEntraRegistrar } from "../../src/registrars/entra/entra-registrar.js";
import type { AgentIdentity, AgentIdentityRef, AgentRegistrar, RegisterAgentRequest } from "../../src/registrars/registrar.js";
import { type EntraFake, type EntraHarness, type EntraHarnessOptions, agentTokenStatus, startEntraFake, startEntraHarness } from "../fakes/entra-fake.js";
import { type Failure, asCaller, callerCode, isFailure } from "../helpers/caller-code.js";

const open: { close(): Promise<void> }[] = [];

afterEach(async () => {
  while (open.length > 0) await open.pop()!.close();
});

async function harness(opts: EntraHarnessOptions = {}): Promise<EntraHarness> {
  const h = await startEntraHarness(opts);
  open.push(h);
  return h;
}

let n = 0;
function request_(overrides: Partial<RegisterAgentRequest> = {}): RegisterAgentRequest {
  n++;
  return {
    delegationId: `dlg-${n}`,
    agentType: "coder",
    agentModel: "model-x",
    delegatorDid: "did:web:example.com/user/alice",
    displayName: `coder ${n} (delegated by alice)`,
    expireTime: Date.UTC(2030, 0, 2, 3, 4, 5, 678),
    ...overrides,
  };
}

async function list(registrar: AgentRegistrar): Promise<AgentIdentityRef[]> {
  const out: AgentIdentityRef[] = [];
  for await (const ref of registrar.listAgents()) out.push(ref);
  return out;
}

async function rejection(p: Promise<unknown>): Promise<Failure> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isFailure(err)).toBe(true);
  return err as Failure;
}

const agentToken = agentTokenStatus;

describe("Entra registrar: application path", () => {
  it("creates a tagged application, a password that ends with the delegation and a service principal", async () => {
    const { registrar, fake } = await harness();
    const req = request_();
    const identity = await registrar.registerAgent(req);

    expect(registrar.backend).toBe("entra");
    const app = fake.applications.get(identity.objectId)!;
    expect(app).toBeDefined();
    expect(identity).toEqual({ clientId: app.appId, clientSecret: expect.any(String), objectId: app.id, displayName: req.displayName });
    expect(identity.clientSecret.length).toBeGreaterThanOrEqual(16);
    expect(app.signInAudience).toBe("AzureADMyOrg");
    expect(app.tags).toEqual([`agent_type:coder`, `delegation_id:${req.delegationId}`, `delegator:${req.delegatorDid}`, "governed:true", "HideApp"]);
    expect(app.notes).toContain(req.delegationId);

    expect(app.passwordCredentials).toHaveLength(1);
    expect(app.passwordCredentials[0]!.displayName).toBe(`delegation-${req.delegationId}`);
    expect(app.passwordCredentials[0]!.endDateTime).toBe("2030-01-02T03:04:05.678Z");
    expect(fake.calls("addPassword")[0]!.body).toEqual({
      passwordCredential: { displayName: `delegation-${req.delegationId}`, endDateTime: new Date(req.expireTime).toISOString() },
    });

    const sps = [...fake.servicePrincipals.values()].filter((sp) => sp.appId === identity.clientId);
    expect(sps).toHaveLength(1);
    expect(sps[0]!.tags).toContain("governed:true");
    expect(sps[0]!.tags).toContain(`delegation_id:${req.delegationId}`);

    // The credential handed out works at the authority.
    expect(await agentToken(fake, identity.clientId, identity.clientSecret)).toBe(200);
    expect(await agentToken(fake, identity.clientId, "wrong")).toBe(401);
  });

  it("skips cloud discovery, reads the authority's OIDC metadata once and caches one token for many calls", async () => {
    const { registrar, fake } = await harness();
    const a = await registrar.registerAgent(request_());
    const b = await registrar.registerAgent(request_());
    await list(registrar);
    await registrar.deleteAgent({ delegationId: "x", clientId: a.clientId, objectId: a.objectId });
    await registrar.deleteAgent({ delegationId: "x", clientId: b.clientId, objectId: "" });

    // Instance discovery would have gone to login.microsoftonline.com and failed: every login call is the fake's.
    expect(fake.calls("openid")).toHaveLength(1);
    expect(fake.calls("token")).toHaveLength(1);
    expect(fake.calls("token")[0]!.body).toMatchObject({
      grant_type: "client_credentials",
      client_id: fake.clientId,
      scope: `${new URL(fake.graphUrl).origin}/.default`,
    });
    expect(fake.requests.filter((r) => r.server === "graph").every((r) => r.authorized)).toBe(true);
  });

  it("shares one token request among concurrent cold callers", async () => {
    const { registrar, fake } = await harness();
    await Promise.all([1, 2, 3, 4].map(() => registrar.registerAgent(request_())));
    expect(fake.calls("token")).toHaveLength(1);
    expect(fake.identities()).toHaveLength(4);
  });

  it("renews the token once when Graph refuses the cached one", async () => {
    const { registrar, fake } = await harness();
    await registrar.registerAgent(request_());
    fake.expireTokens();
    await registrar.registerAgent(request_());
    expect(fake.calls("token")).toHaveLength(2);
    expect(fake.calls("createApplication").map((r) => r.status)).toEqual([201, 401, 201]);
  });

  it("retries addPassword and service principal creation while the new application replicates", async () => {
    const { registrar, fake } = await harness();
    fake.replicationLag(2);
    const identity = await registrar.registerAgent(request_());
    expect(fake.calls("addPassword").map((r) => r.status)).toEqual([404, 404, 200]);
    expect(fake.calls("createServicePrincipal").map((r) => r.status)).toEqual([400, 400, 201]);
    expect(fake.calls("createApplication")).toHaveLength(1);
    expect(fake.applications.get(identity.objectId)!.passwordCredentials).toHaveLength(1);
  });

  it("deletes the application when a later step fails, and reports the Graph status and code", async () => {
    const { registrar, fake } = await harness();
    fake.fail("createServicePrincipal", { status: 403 });
    const err = await rejection(registrar.registerAgent(request_()));
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.reason).toBe("ENTRA_PERMISSION_DENIED");
    expect(err.metadata).toMatchObject({ status: "403", code: "Authorization_RequestDenied" });
    expect(fake.applications.size).toBe(0);
    expect(fake.deletedItems.size).toBe(1);
    expect(fake.calls("deleteApplication").map((r) => r.status)).toEqual([204]);

    fake.fail("addPassword", { status: 400, code: "Request_BadRequest" });
    const err2 = await rejection(registrar.registerAgent(request_()));
    expect(err2.reason).toBe("ENTRA_REJECTED");
    expect(err2.metadata).toMatchObject({ status: "400", code: "Request_BadRequest", operation: "add password" });
    expect(fake.identities()).toEqual([]);
  });

  it("deletes by object id, by appId and by delegation tag", async () => {
    const { registrar, fake } = await harness();
    const a = await registrar.registerAgent(request_());
    const b = await registrar.registerAgent(request_());
    const reqC = request_();
    const c = await registrar.registerAgent(reqC);

    await registrar.deleteAgent({ delegationId: "ignored", clientId: a.clientId, objectId: a.objectId });
    expect(fake.calls("deleteApplication").at(-1)!.path).toBe(`/v1.0/applications/${a.objectId}`);

    await registrar.deleteAgent({ delegationId: "ignored", clientId: b.clientId, objectId: "" });
    expect(fake.calls("listApplications").at(-1)!.query.get("$filter")).toBe(`appId eq '${b.clientId}'`);

    await registrar.deleteAgent({ delegationId: reqC.delegationId, clientId: "", objectId: "" });
    expect(fake.calls("listApplications").at(-1)!.query.get("$filter")).toBe(`tags/any(t:t eq 'delegation_id:${reqC.delegationId}')`);

    expect(fake.identities()).toEqual([]);
    expect([...fake.deletedItems.keys()].sort()).toEqual([a.objectId, b.objectId, c.objectId].sort());
    // Deleting the application took its service principal along.
    expect(fake.servicePrincipals.size).toBe(0);
  });

  it("counts an identity that is already gone as deleted", async () => {
    const { registrar, fake } = await harness();
    const a = await registrar.registerAgent(request_());
    const ref = { delegationId: "d", clientId: a.clientId, objectId: a.objectId };
    await registrar.deleteAgent(ref);
    await registrar.deleteAgent(ref);
    await registrar.deleteAgent({ ...ref, objectId: "" });
    await registrar.deleteAgent({ delegationId: "never-registered", clientId: "", objectId: "" });
    expect(fake.calls("deleteApplication").map((r) => r.status)).toEqual([204, 404]);
  });

  it("purges deleted applications from deleted items when configured, idempotently", async () => {
    const { registrar, fake } = await harness({ purgeDeleted: true });
    const a = await registrar.registerAgent(request_());
    const ref = { delegationId: "d", clientId: a.clientId, objectId: a.objectId };
    await registrar.deleteAgent(ref);
    expect(fake.deletedItems.has(a.objectId)).toBe(false);
    expect(fake.calls("purgeDeletedItem").map((r) => [r.path, r.status])).toEqual([[`/v1.0/directory/deletedItems/${a.objectId}`, 204]]);
    await registrar.deleteAgent(ref);
    expect(fake.calls("purgeDeletedItem").map((r) => r.status)).toEqual([204, 404]);
  });

  it("lists governed identities across pages with their delegation ids", async () => {
    const { registrar, fake } = await harness({ fake: { pageSize: 2 } });
    const reqs = [request_(), request_(), request_(), request_(), request_()];
    const ids: AgentIdentity[] = [];
    for (const r of reqs) ids.push(await registrar.registerAgent(r));
    fake.addApplication("someone else's app", ["team:payments"]);
    fake.addApplication("governed but not ours", ["governed:true"]);

    const refs = await list(registrar);
    expect(refs).toEqual(reqs.map((r, i) => ({ delegationId: r.delegationId, clientId: ids[i]!.clientId, objectId: ids[i]!.objectId })));
    const calls = fake.calls("listApplications");
    expect(calls).toHaveLength(3);
    expect(calls[0]!.query.get("$filter")).toBe("tags/any(t:t eq 'governed:true')");
    expect(calls[1]!.query.has("$skiptoken")).toBe(true);
  });

  it("honours Retry-After on 429, even for a create", async () => {
    const { registrar, fake } = await harness({ httpOptions: { timeoutMs: 2_000, maxRetries: 2, minBackoffMs: 10, maxBackoffMs: 5_000 } });
    await registrar.registerAgent(request_()); // warm the token
    fake.fail("createApplication", { status: 429, retryAfter: "1" });
    await registrar.registerAgent(request_());
    const [throttled, accepted] = fake.calls("createApplication").slice(-2);
    expect([throttled!.status, accepted!.status]).toEqual([429, 201]);
    expect(accepted!.at - throttled!.at).toBeGreaterThanOrEqual(950);
    expect(fake.identities()).toHaveLength(2);
  });

  it("retries a Graph 500 on GET and DELETE but not on a create", async () => {
    const { registrar, fake } = await harness();
    const a = await registrar.registerAgent(request_());
    fake.fail("listApplications", { status: 500 }, 2);
    expect(await list(registrar)).toHaveLength(1);
    expect(fake.calls("listApplications").map((r) => r.status)).toEqual([500, 500, 200]);

    fake.fail("deleteApplication", { status: 503, retryAfter: "0" });
    await registrar.deleteAgent({ delegationId: "d", clientId: a.clientId, objectId: a.objectId });
    expect(fake.calls("deleteApplication").map((r) => r.status)).toEqual([503, 204]);

    fake.fail("createApplication", { status: 500 });
    const err = await rejection(registrar.registerAgent(request_()));
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.reason).toBe("ENTRA_UNAVAILABLE");
    expect(fake.calls("createApplication").map((r) => r.status)).toEqual([201, 500]);
  });

  it("answers DEADLINE_EXCEEDED when Graph or the authority does not answer in time", async () => {
    const httpOptions = { timeoutMs: 300, maxRetries: 0, minBackoffMs: 10, maxBackoffMs: 50 };
    const { registrar, fake } = await harness({ httpOptions });
    await registrar.registerAgent(request_());
    fake.fail("createApplication", { delayMs: 1_500 });
    const started = Date.now();
    const err = await rejection(registrar.registerAgent(request_()));
    expect(callerCode(err)).toBe("DEADLINE_EXCEEDED");
    expect(err.reason).toBe("ENTRA_TIMEOUT");
    expect(Date.now() - started).toBeLessThan(1_200);

    const cold = await harness({ httpOptions });
    cold.fake.fail("token", { delayMs: 1_500 });
    const err2 = await rejection(cold.registrar.registerAgent(request_()));
    expect(callerCode(err2)).toBe("DEADLINE_EXCEEDED");
    expect(err2.reason).toBe("ENTRA_TIMEOUT");
    expect(cold.fake.calls("createApplication")).toHaveLength(0);
  });

  it("answers UNAVAILABLE when Graph or the authority refuses connections", async () => {
    const httpOptions = { timeoutMs: 500, maxRetries: 1, minBackoffMs: 10, maxBackoffMs: 50 };
    const { registrar, fake } = await harness({ httpOptions });
    await registrar.registerAgent(request_());
    await fake.refuse("graph");
    const err = await rejection(registrar.registerAgent(request_()));
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.reason).toBe("ENTRA_UNAVAILABLE");
    await fake.accept("graph");
    await registrar.registerAgent(request_());

    // A cold registrar: MSAL's discovery request fails; the error says why, not "openid_config_error".
    const cold = await harness({ httpOptions });
    await cold.fake.refuse("login");
    const err2 = await rejection(cold.registrar.registerAgent(request_()));
    expect(callerCode(err2)).toBe("UNAVAILABLE");
    expect(err2.reason).toBe("ENTRA_UNAVAILABLE");
    expect(err2.message).toContain("ECONNREFUSED");
  });

  it("rejects a bad broker secret as ENTRA_CREDENTIALS_REJECTED without the secret in any error or log", async () => {
    const fake = await startEntraFake();
    open.push(fake);
    const lines: string[] = [];
    const log = createLogger({ level: "trace", destination: { write: (line: string) => void lines.push(line) } });
    const badSecret = "Wr0ng~SecretValue-DoNotLeak-1234567890";
    const registrar = createEntraRegistrar({ ...fake.registrarOptions(), clientSecret: badSecret, log });
    open.push(registrar);

    const err = await rejection(registrar.registerAgent(request_()));
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.reason).toBe("ENTRA_CREDENTIALS_REJECTED");
    expect(err.metadata).toMatchObject({ error: "invalid_client", aadsts: "7000215", status: "401" });
    expect(fake.calls("token").map((r) => r.status)).toEqual([401]);
    expect(fake.calls("createApplication")).toHaveLength(0);

    log.warn({ err, cause: err.cause }, err.message); // as the server's error mapper logs it
    const everything = [inspect(err, { depth: 10 }), JSON.stringify(err.metadata), err.message, ...lines].join("\n");
    expect(everything).not.toContain(badSecret);
    expect(lines.length).toBeGreaterThan(0);
  });

  it("stops asking for tokens while MSAL's throttle holds after a 429 from the authority", async () => {
    const { registrar, fake } = await harness({ httpOptions: { timeoutMs: 1_000, maxRetries: 1, minBackoffMs: 10, maxBackoffMs: 50 } });
    fake.fail("token", { status: 429, retryAfter: "0" }, 10);
    const first = await rejection(registrar.registerAgent(request_()));
    expect(callerCode(first)).toBe("UNAVAILABLE");
    expect(first.reason).toBe("ENTRA_UNAVAILABLE");
    expect(fake.calls("token")).toHaveLength(2); // HttpClient retried once

    const second = await rejection(registrar.registerAgent(request_()));
    expect(callerCode(second)).toBe("UNAVAILABLE");
    expect(second.reason).toBe("ENTRA_THROTTLED");
    expect(fake.calls("token")).toHaveLength(2); // MSAL answered from its throttle cache
  });

  it("maps a 5xx from the authority to UNAVAILABLE and throttles too (fresh MSAL app)", async () => {
    const { registrar, fake } = await harness({ httpOptions: { timeoutMs: 1_000, maxRetries: 0, minBackoffMs: 10, maxBackoffMs: 50 } });
    fake.fail("token", { status: 503 }, 5);
    expect((await rejection(registrar.registerAgent(request_()))).reason).toBe("ENTRA_UNAVAILABLE");
    expect((await rejection(registrar.registerAgent(request_()))).reason).toBe("ENTRA_THROTTLED");
    expect(fake.calls("token")).toHaveLength(1);
  });

  it("refuses an insecure authority and a blueprint without a sponsor", () => {
    const base = { tenantId: "t", clientId: "c", clientSecret: "s" };
    expect(() => createEntraRegistrar({ ...base, authorityHost: "http://127.0.0.1:9" })).toThrow(/https/);
    expect(() => createEntraRegistrar({ ...base, agentBlueprintId: "bp" })).toThrow(/sponsor/);
  });

  it("uses an injected HttpClient for MSAL and Graph alike", async () => {
    const fake = await startEntraFake();
    open.push(fake);
    const http = new HttpClient({ system: "entra", ca: fake.ca, timeoutMs: 2_000 });
    open.push(http);
    const registrar = createEntraRegistrar({ ...fake.registrarOptions(), http });
    await registrar.registerAgent(request_());
    await registrar.close(); // leaves the injected client open
    await list(createEntraRegistrar({ ...fake.registrarOptions(), http }));
    expect(fake.calls("listApplications")).toHaveLength(1);
  });
});

describe("Entra registrar: Agent ID path", () => {
  it("creates an agent identity of the blueprint with the sponsor binding and no password", async () => {
    const { registrar, fake } = await harness({ blueprint: true });
    const req = request_();
    const identity = await registrar.registerAgent(req);

    expect(identity.clientSecret).toBe("");
    const agent = fake.servicePrincipals.get(identity.objectId)!;
    expect(agent["@odata.type"]).toBe("#microsoft.graph.agentIdentity");
    expect(agent.appId).toBe(identity.clientId);
    expect(agent.agentIdentityBlueprintId).toBe(fake.blueprintAppId);
    expect(agent.sponsors).toEqual([fake.sponsorId]);
    expect(agent.tags).toContain(`delegation_id:${req.delegationId}`);
    expect(agent.tags).toContain("governed:true");
    expect(fake.calls("createAgentIdentity")[0]!.body).toMatchObject({
      displayName: req.displayName,
      agentIdentityBlueprintId: fake.blueprintAppId,
      "sponsors@odata.bind": [`${fake.graphUrl}/users/${fake.sponsorId}`],
    });
    expect(fake.calls("createApplication")).toHaveLength(0);
    expect(fake.calls("addPassword")).toHaveLength(0);

    expect(await list(registrar)).toEqual([{ delegationId: req.delegationId, clientId: identity.clientId, objectId: identity.objectId }]);
    expect(fake.calls("listAgentIdentities")).toHaveLength(1);
  });

  it("deletes agent identities by object id, by appId and by tag, and purges them when configured", async () => {
    const { registrar, fake } = await harness({ blueprint: true, purgeDeleted: true });
    const a = await registrar.registerAgent(request_());
    const b = await registrar.registerAgent(request_());
    const reqC = request_();
    await registrar.registerAgent(reqC);

    await registrar.deleteAgent({ delegationId: "d", clientId: a.clientId, objectId: a.objectId });
    expect(fake.calls("deleteServicePrincipal")[0]!.path).toBe(`/v1.0/servicePrincipals/${a.objectId}`);
    await registrar.deleteAgent({ delegationId: "d", clientId: b.clientId, objectId: "" });
    await registrar.deleteAgent({ delegationId: reqC.delegationId, clientId: "", objectId: "" });
    await registrar.deleteAgent({ delegationId: "d", clientId: a.clientId, objectId: a.objectId });

    expect(fake.identities()).toEqual([]);
    expect(fake.deletedItems.size).toBe(0);
    expect(fake.calls("deleteServicePrincipal").map((r) => r.status)).toEqual([204, 204, 204, 404]);
    expect(fake.calls("purgeDeletedItem").map((r) => r.status)).toEqual([204, 204, 204, 404]);
  });

  it("soft-deletes agent identities into deleted items by default", async () => {
    const { registrar, fake, identities } = await harness({ blueprint: true });
    const a = await registrar.registerAgent(request_());
    expect(await identities()).toHaveLength(1);
    await registrar.deleteAgent({ delegationId: "d", clientId: a.clientId, objectId: a.objectId });
    expect(await identities()).toEqual([]);
    expect(fake.deletedItems.get(a.objectId)?.kind).toBe("agentIdentity");
  });
});

/** Token requests of the broker itself (not an agent's sign-in, as agentToken sends). */
function brokerTokens(fake: EntraFake) {
  return fake.calls("token").filter((r) => (r.body as { client_id?: string }).client_id === fake.clientId);
}

describe("Entra registrar: rotateSecret", () => {
  async function registered(opts: EntraHarnessOptions = {}) {
    const h = await harness(opts);
    const req = request_();
    const identity = await h.registrar.registerAgent(req);
    const ref: AgentIdentityRef = { delegationId: req.delegationId, clientId: identity.clientId, objectId: identity.objectId };
    return { ...h, req, identity, ref };
  }

  it("adds a password ending with the delegation and removes the old one: the new secret works, the old one no longer does", async () => {
    const { registrar, fake, req, identity, ref } = await registered();
    const app = fake.applications.get(identity.objectId)!;
    const oldKey = app.passwordCredentials[0]!.keyId;

    const rotated = await registrar.rotateSecret(ref);
    expect(rotated).toEqual(expect.any(String));
    expect(rotated).not.toBe(identity.clientSecret);
    expect(await agentToken(fake, identity.clientId, rotated!)).toBe(200);
    expect(await agentToken(fake, identity.clientId, identity.clientSecret)).toBe(401);

    expect(app.passwordCredentials).toHaveLength(1);
    expect(app.passwordCredentials[0]!.keyId).not.toBe(oldKey);
    expect(app.passwordCredentials[0]!.endDateTime).toBe("2030-01-02T03:04:05.678Z");
    const read = fake.calls("getApplication")[0]!;
    expect(read.path).toBe(`/v1.0/applications/${identity.objectId}`);
    expect(read.query.get("$select")?.split(",")).toEqual(expect.arrayContaining(["id", "appId", "tags", "passwordCredentials"]));
    expect(fake.calls("addPassword").at(-1)!.body).toEqual({
      passwordCredential: { displayName: `delegation-${req.delegationId}`, endDateTime: "2030-01-02T03:04:05.678Z" },
    });
    expect(fake.calls("removePassword").map((r) => [r.path, r.body, r.status])).toEqual([
      [`/v1.0/applications/${identity.objectId}/removePassword`, { keyId: oldKey }, 204],
    ]);
  });

  it("removes every other password, an operator's too, and never outlives the earliest", async () => {
    const { registrar, fake, identity, ref } = await registered();
    const oldKey = fake.applications.get(identity.objectId)!.passwordCredentials[0]!.keyId;
    const later = fake.addPasswordTo(identity.objectId, { displayName: "operator", endDateTime: "2031-01-01T00:00:00Z" });
    const sooner = fake.addPasswordTo(identity.objectId, { displayName: "operator", endDateTime: "2029-06-30T00:00:00Z" });

    const rotated = await registrar.rotateSecret(ref);
    const app = fake.applications.get(identity.objectId)!;
    expect(app.passwordCredentials.map((c) => c.endDateTime)).toEqual(["2029-06-30T00:00:00.000Z"]);
    const removed = fake.calls("removePassword").map((r) => (r.body as { keyId: string }).keyId);
    expect(removed.sort()).toEqual([oldKey, later.keyId, sooner.keyId].sort());
    expect(await agentToken(fake, identity.clientId, rotated!)).toBe(200);
    for (const old of [identity.clientSecret, later.secretText, sooner.secretText]) expect(await agentToken(fake, identity.clientId, old)).toBe(401);
  });

  it("ends the new password at the expiry noted on the application when it holds no password any more", async () => {
    const { registrar, fake, identity, ref } = await registered();
    fake.applications.get(identity.objectId)!.passwordCredentials.splice(0);
    const rotated = await registrar.rotateSecret(ref);
    expect(fake.applications.get(identity.objectId)!.passwordCredentials.map((c) => c.endDateTime)).toEqual(["2030-01-02T03:04:05.678Z"]);
    expect(fake.calls("removePassword")).toHaveLength(0);
    expect(await agentToken(fake, identity.clientId, rotated!)).toBe(200);
  });

  it("finds the application by appId, else by its delegation tag, and touches no other delegation's", async () => {
    const { registrar, fake, req, identity } = await registered();
    const other = await registrar.registerAgent(request_());

    const byAppId = await registrar.rotateSecret({ delegationId: req.delegationId, clientId: identity.clientId, objectId: "" });
    expect(fake.calls("getApplication").at(-1)!.path).toBe(`/v1.0/applications(appId='${identity.clientId}')`);
    const byTag = await registrar.rotateSecret({ delegationId: req.delegationId, clientId: "", objectId: "" });
    expect(fake.calls("listApplications").at(-1)!.query.get("$filter")).toBe(`tags/any(t:t eq 'delegation_id:${req.delegationId}')`);

    expect(await agentToken(fake, identity.clientId, byTag!)).toBe(200);
    expect(await agentToken(fake, identity.clientId, byAppId!)).toBe(401);
    expect(await agentToken(fake, other.clientId, other.clientSecret)).toBe(200);
  });

  it("renews the token once when Graph refuses it mid-rotation", async () => {
    const { registrar, fake, identity, ref } = await registered();
    fake.fail("removePassword", { status: 401 });
    const rotated = await registrar.rotateSecret(ref);
    expect(fake.calls("removePassword").map((r) => r.status)).toEqual([401, 204]);
    expect(brokerTokens(fake)).toHaveLength(2);
    expect(await agentToken(fake, identity.clientId, rotated!)).toBe(200);

    fake.expireTokens();
    await registrar.rotateSecret(ref);
    expect(fake.calls("getApplication").map((r) => r.status)).toEqual([200, 401, 200]);
    expect(brokerTokens(fake)).toHaveLength(3);
  });

  it("repeats reads and removals after a 5xx and an addPassword after a 429, but not an addPassword after a 5xx", async () => {
    const { registrar, fake, identity, ref } = await registered();
    fake.fail("getApplication", { status: 503, retryAfter: "0" });
    fake.fail("addPassword", { status: 429, retryAfter: "0" });
    fake.fail("removePassword", { status: 500 });
    const rotated = await registrar.rotateSecret(ref);
    expect(fake.calls("getApplication").map((r) => r.status)).toEqual([503, 200]);
    expect(fake.calls("addPassword").map((r) => r.status)).toEqual([200, 429, 200]);
    expect(fake.calls("removePassword").map((r) => r.status)).toEqual([500, 204]);
    expect(fake.applications.get(identity.objectId)!.passwordCredentials).toHaveLength(1);

    // Each addPassword adds a password: a 5xx may have added one, so it is not repeated.
    fake.fail("addPassword", { status: 500 });
    const err = await rejection(registrar.rotateSecret(ref));
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err).toMatchObject({ reason: "ENTRA_UNAVAILABLE", retryable: true });
    expect(fake.calls("addPassword").map((r) => r.status)).toEqual([200, 429, 200, 500]);
    expect(await agentToken(fake, identity.clientId, rotated!)).toBe(200); // untouched
  });

  it("counts a removal repeated after a lost answer as done (Graph then refuses the keyId it no longer has)", async () => {
    // The first removal times out but is processed; the repeat, sent after it, meets 400.
    const { registrar, fake, identity, ref } = await registered({
      httpOptions: { timeoutMs: 300, maxRetries: 2, minBackoffMs: 10, maxBackoffMs: 50, sleep: () => new Promise((r) => setTimeout(r, 300)) },
    });
    fake.fail("removePassword", { delayMs: 400 });
    const rotated = await registrar.rotateSecret(ref);
    const removals = fake.calls("removePassword");
    expect(removals.map((r) => r.status)).toEqual([204, 400]);
    expect(fake.calls("getApplication")).toHaveLength(2); // the read before, and the one telling "already removed"
    expect(fake.applications.get(identity.objectId)!.passwordCredentials).toHaveLength(1);
    expect(await agentToken(fake, identity.clientId, rotated!)).toBe(200);
    expect(await agentToken(fake, identity.clientId, identity.clientSecret)).toBe(401);
  });

  it("a removal Graph refuses for good fails the rotation and takes the new password away again", async () => {
    const { registrar, fake, identity, ref } = await registered();
    const before = fake.applications.get(identity.objectId)!.passwordCredentials.map((c) => c.keyId);
    fake.fail("removePassword", { status: 403 });
    const err = await rejection(registrar.rotateSecret(ref));
    expect(err.reason).toBe("ENTRA_PERMISSION_DENIED");
    expect(err.metadata).toMatchObject({ operation: "remove password", status: "403" });
    expect(fake.applications.get(identity.objectId)!.passwordCredentials.map((c) => c.keyId)).toEqual(before);
    expect(await agentToken(fake, identity.clientId, identity.clientSecret)).toBe(200);
  });

  it("an application that is gone is a non-retryable ENTRA_IDENTITY_GONE (after the replication wait, by object id)", async () => {
    const { registrar, fake, req, identity, ref } = await registered();
    await registrar.deleteAgent(ref);
    for (const [r, named] of [
      [ref, identity.clientId],
      [{ delegationId: req.delegationId, clientId: "", objectId: "" }, req.delegationId],
    ] as const) {
      const err = await rejection(registrar.rotateSecret(r));
      expect(err).toBeInstanceOf(UpstreamError);
      expect(callerCode(err)).toBe("UNAVAILABLE");
      expect(err).toMatchObject({ reason: "ENTRA_IDENTITY_GONE", failure: "rejected", retryable: false });
      expect(err.message).toContain(named);
      expect(err.message).toContain("no longer exists");
    }
    expect(fake.calls("getApplication").map((r) => r.status)).toEqual([404, 404, 404, 404, 404, 404]);
    expect(fake.calls("addPassword")).toHaveLength(1); // registerAgent's only
  });

  it("refuses an application tagged with another delegation, or not governed, and leaves its passwords alone", async () => {
    const { registrar, fake } = await harness();
    const foreign = fake.addApplication("someone else's agent", ["governed:true", "delegation_id:dlg-someone-else"]);
    const plain = fake.addApplication("an operator's app", []);
    const kept = fake.addPasswordTo(foreign.id);
    for (const ref of [
      { delegationId: "dlg-mine", clientId: foreign.appId, objectId: foreign.id },
      { delegationId: "", clientId: "", objectId: plain.id },
    ]) {
      const err = await rejection(registrar.rotateSecret(ref));
      expect(err).toMatchObject({ reason: "ENTRA_IDENTITY_CONFLICT", failure: "rejected", retryable: false });
    }
    expect(fake.calls("addPassword")).toHaveLength(0);
    expect(fake.calls("removePassword")).toHaveLength(0);
    expect(fake.applications.get(foreign.id)!.passwordCredentials.map((c) => c.keyId)).toEqual([kept.keyId]);
  });

  it("answers undefined for an Entra Agent ID identity without asking Graph or the authority", async () => {
    const { registrar, fake, ref } = await registered({ blueprint: true });
    const before = fake.requests.length;
    expect(await registrar.rotateSecret(ref)).toBeUndefined();
    expect(await registrar.rotateSecret({ delegationId: ref.delegationId, clientId: "", objectId: "" })).toBeUndefined();
    expect(fake.requests.length).toBe(before);
  });

  it("never puts a secret in an error or a log line while rotating", async () => {
    const lines: string[] = [];
    const log = createLogger({ level: "trace", destination: { write: (line: string) => void lines.push(line) } });
    const { registrar, fake, identity, ref } = await registered({ log });
    const errors: unknown[] = [];
    const attempt = async (p: Promise<unknown>) => p.catch((err: unknown) => void errors.push(err));

    const rotated = [await registrar.rotateSecret(ref)];
    fake.expireTokens();
    rotated.push(await registrar.rotateSecret(ref)); // 401 and renewal
    fake.fail("addPassword", { status: 500 });
    await attempt(registrar.rotateSecret(ref));
    fake.fail("removePassword", { status: 400 });
    fake.fail("removePassword", { status: 503 }, 3); // the clean-up fails too, and is logged
    await attempt(registrar.rotateSecret(ref));
    await attempt(registrar.rotateSecret({ ...ref, delegationId: "dlg-not-this-one" }));
    rotated.push(await registrar.rotateSecret(ref));
    for (const e of errors) log.warn({ err: e, cause: (e as Error).cause }, (e as Error).message); // as the server's error mapper logs it

    expect(errors).toHaveLength(3);
    const secrets = [fake.clientSecret, identity.clientSecret, ...rotated.map((s) => s ?? ""), ...fake.accessTokens()];
    expect(rotated.every((s) => (s ?? "").length >= 16)).toBe(true);
    const everything = [...lines, ...errors.map((e) => inspect(e, { depth: 10 }))].join("\n");
    expect(lines.length).toBeGreaterThan(5);
    for (const secret of secrets) expect(everything).not.toContain(secret);
  });
});

describe("the fake Entra itself", () => {
  /** A Graph call with the broker's own app token. */
  async function graph(fake: EntraFake, method: "GET" | "POST", path: string, json?: unknown) {
    const dispatcher = new Agent({ connect: { ca: fake.ca } });
    try {
      const origin = new URL(fake.graphUrl).origin;
      const tokenRes = await request(`${fake.authorityHost}/${fake.tenantId}/oauth2/v2.0/token`, {
        dispatcher,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "client_credentials", client_id: fake.clientId, client_secret: fake.clientSecret, scope: `${origin}/.default` }).toString(),
      });
      const { access_token: token } = (await tokenRes.body.json()) as { access_token: string };
      const res = await request(`${fake.graphUrl}${path}`, {
        dispatcher,
        method,
        headers: { authorization: `Bearer ${token}`, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
        ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
      });
      const text = await res.body.text();
      return { status: res.statusCode, body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
    } finally {
      await dispatcher.close();
    }
  }

  it("removePassword answers 204, then 400 for the keyId it no longer holds, 404 for an unknown application", async () => {
    const fake = await startEntraFake();
    open.push(fake);
    const app = fake.addApplication("app");
    const { keyId } = fake.addPasswordTo(app.id);
    expect(await graph(fake, "POST", `/applications/${app.id}/removePassword`, { keyId })).toEqual({ status: 204, body: undefined });
    const again = await graph(fake, "POST", `/applications/${app.id}/removePassword`, { keyId });
    expect(again.status).toBe(400);
    expect(again.body).toMatchObject({ error: { code: "Request_BadRequest", message: `No password credential found with keyId ${keyId}.` } });
    const unknown = await graph(fake, "POST", `/applications/${randomUUID()}/removePassword`, { keyId });
    expect([unknown.status, (unknown.body?.error as { code?: string }).code]).toEqual([404, "Request_ResourceNotFound"]);
  });

  it("GET of one application honours $select and shows passwords without their secret", async () => {
    const fake = await startEntraFake();
    open.push(fake);
    const app = fake.addApplication("app", ["governed:true"]);
    const { keyId } = fake.addPasswordTo(app.id, { endDateTime: "2030-01-01T00:00:00Z" });
    const res = await graph(fake, "GET", `/applications(appId='${app.appId}')?$select=id,tags,passwordCredentials`);
    expect(res.status).toBe(200);
    expect(Object.keys(res.body ?? {}).sort()).toEqual(["@odata.context", "id", "passwordCredentials", "tags"]);
    expect(res.body?.passwordCredentials).toEqual([expect.objectContaining({ keyId, secretText: null, endDateTime: "2030-01-01T00:00:00Z" })]);
  });
});
