/**
 * The Keycloak registrar against a loopback Keycloak (test/fakes/keycloak-fake.ts):
 * admin token caching and renewal, the create/adopt/rotate/delete/list
 * contract, the transport policy (timeouts, refused connections, 5xx, 429)
 * and that no secret reaches an error message or a log line.
 */
import { afterEach, describe, expect, it } from "vitest";
import { HttpClient, type HttpClientOptions, UpstreamError } from "../../src/clients/http/http-client.js";
import { type Logger, createLogger } from "../../src/logging.js";
import {
  GOVERNED_ATTRIBUTE,
  createKeycloakRegistrar,
  keycloakClientId,
  tokenRenewalMarginMs,
} from "../../src/registrars/keycloak/keycloak-registrar.js";
import type { AgentIdentity, RegisterAgentRequest } from "../../src/registrars/registrar.js";
import { KeycloakFake, type KeycloakFakeOptions, parseSearchQuery, startKeycloakHarness } from "../fakes/keycloak-fake.js";
import { type Failure, asCaller, callerCode, isFailure } from "../helpers/caller-code.js";

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (closers.length) await closers.pop()?.();
});

interface SetupOptions {
  fake?: KeycloakFakeOptions;
  http?: Partial<Omit<HttpClientOptions, "system">>;
  clock?: () => number;
  log?: Logger;
  pageSize?: number;
  adminClientId?: string;
  adminClientSecret?: string;
}

/** A fake Keycloak and a registrar with short timings: 300 ms per attempt, tiny backoff, Retry-After honoured up to 2 s. */
async function setup(options: SetupOptions = {}) {
  const fake = await KeycloakFake.start(options.fake);
  const http = new HttpClient({
    system: "keycloak",
    timeoutMs: 300,
    deadlineMs: 4_000,
    maxRetries: 2,
    minBackoffMs: 5,
    maxBackoffMs: 2_000,
    ...options.http,
  });
  const registrar = createKeycloakRegistrar({
    url: fake.url,
    realm: fake.realm,
    adminClientId: options.adminClientId ?? fake.adminClientId,
    adminClientSecret: options.adminClientSecret ?? fake.adminClientSecret,
    http,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.log ? { log: options.log } : {}),
    ...(options.pageSize ? { pageSize: options.pageSize } : {}),
  });
  closers.push(async () => {
    await registrar.close();
    await http.close();
    await fake.close();
  });
  return { fake, http, registrar };
}

let seq = 0;
function request(over: Partial<RegisterAgentRequest> = {}): RegisterAgentRequest {
  seq++;
  return {
    delegationId: `del_01J${String(seq).padStart(23, "0")}`,
    agentType: "claude-code",
    agentModel: "claude-sonnet",
    delegatorDid: "did:web:example.com:alice",
    displayName: `Agent ${seq} for alice`,
    expireTime: Date.parse("2031-05-06T07:08:09.000Z"),
    ...over,
  };
}

/** The rejection of `p`, which must be a BrokerError or an UpstreamError. */
async function failure(p: Promise<unknown>): Promise<Failure> {
  try {
    await p;
  } catch (err) {
    if (isFailure(err)) return err;
    throw err;
  }
  throw new Error("expected a failure");
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Status of a client_credentials request to the fake's token endpoint with these credentials. */
async function tokenStatus(fake: KeycloakFake, clientId: string, secret: string): Promise<number> {
  const res = await fetch(`${fake.url}/realms/${fake.realm}/protocol/openid-connect/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: clientId, client_secret: secret }).toString(),
  });
  await res.arrayBuffer();
  return res.status;
}

/** Token requests of the broker's admin client (not an agent's, as tokenStatus sends). */
function adminTokenRequests(fake: KeycloakFake) {
  return fake.requestsTo("token").filter((r) => new URLSearchParams(r.body).get("client_id") === fake.adminClientId);
}

describe("the admin token", () => {
  it("is fetched once for many calls, with the secret only in the form body of the token request", async () => {
    const { fake, registrar } = await setup();
    const a = await registrar.registerAgent(request());
    await registrar.registerAgent(request());
    await collect(registrar.listAgents());
    await registrar.deleteAgent({ delegationId: "", clientId: a.clientId, objectId: a.objectId });

    expect(fake.requestsTo("token")).toHaveLength(1);
    const [tokenRequest] = fake.requestsTo("token");
    expect(tokenRequest?.headers["content-type"]).toMatch(/^application\/x-www-form-urlencoded/);
    expect(new URLSearchParams(tokenRequest?.body).get("grant_type")).toBe("client_credentials");
    for (const r of fake.requests) {
      expect(r.url).not.toContain(fake.adminClientSecret);
      expect(JSON.stringify(r.headers)).not.toContain(fake.adminClientSecret);
      if (r.route !== "token") {
        expect(r.headers.authorization).toMatch(/^Bearer \S+$/);
        expect(r.body).not.toContain(fake.adminClientSecret);
      }
    }
  });

  it("is shared by concurrent callers: one token request in flight", async () => {
    const { fake, registrar } = await setup();
    fake.inject("token", { kind: "delay", ms: 100 });
    await Promise.all(Array.from({ length: 6 }, () => registrar.registerAgent(request())));
    expect(fake.requestsTo("token")).toHaveLength(1);
    expect(fake.clients()).toHaveLength(6);
  });

  it("is renewed a margin before expiry (10% of its lifetime, at most 30 s)", async () => {
    expect(tokenRenewalMarginMs(300)).toBe(30_000);
    expect(tokenRenewalMarginMs(3_600)).toBe(30_000);
    expect(tokenRenewalMarginMs(60)).toBe(6_000);

    let now = Date.now();
    const { fake, registrar } = await setup({ fake: { tokenLifetimeSec: 60 }, clock: () => now });
    await registrar.registerAgent(request());
    now += 53_000; // 7 s left, more than the 6 s margin: still cached
    await collect(registrar.listAgents());
    expect(fake.requestsTo("token")).toHaveLength(1);
    now += 2_000; // 5 s left: renewed
    await collect(registrar.listAgents());
    expect(fake.requestsTo("token")).toHaveLength(2);
  });

  it("is renewed once, and the call repeated once, when the admin API answers 401", async () => {
    const { fake, registrar } = await setup();
    await registrar.registerAgent(request());
    fake.expireTokens(); // the registrar still believes its token is valid
    const b = await registrar.registerAgent(request());

    expect(fake.requestsTo("token")).toHaveLength(2);
    expect(fake.requestsTo("create")).toHaveLength(3); // one, then 401 + repeat
    expect(fake.clients().map((c) => c.clientId)).toContain(b.clientId);
    expect(fake.clients()).toHaveLength(2);
  });

  it("is renewed only once: a second 401 is an error, not a loop", async () => {
    const { fake, registrar } = await setup();
    fake.failNext("list", 401, { times: 5 });
    const err = await failure(collect(registrar.listAgents()));
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_REJECTED" });
    expect(err.message).toContain("401");
    expect(fake.requestsTo("token")).toHaveLength(2);
    expect(fake.requestsTo("list")).toHaveLength(2);
  });

  it.each([
    ["a wrong secret (unauthorized_client)", {}, "wrong-secret-0123456789abcdef"],
    ["an unknown client (invalid_client)", { adminClientId: "nobody" }, "another-wrong-secret-987654"],
  ])("rejected for %s: UNAVAILABLE KEYCLOAK_CREDENTIALS_REJECTED, not retried, no secret in the message", async (_, extra, secret) => {
    const { fake, registrar } = await setup({ ...extra, adminClientSecret: secret });
    const err = await failure(registrar.registerAgent(request()));
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_CREDENTIALS_REJECTED" });
    expect(err.message).toContain("401");
    expect(err.message).not.toContain(secret);
    expect(fake.requestsTo("token")).toHaveLength(1);
    expect(fake.requestsTo("create")).toHaveLength(0);
  });

  it("without manage-clients: 403 becomes UNAVAILABLE KEYCLOAK_REJECTED naming the status", async () => {
    const { fake, registrar } = await setup({ fake: { adminRoles: ["view-clients"] } });
    const err = await failure(registrar.registerAgent(request()));
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_REJECTED" });
    expect(err.message).toContain("403");
    expect(err.message).toContain("manage-clients");
    expect(fake.clients()).toHaveLength(0);
  });
});

describe("registerAgent", () => {
  it("creates a confidential service-account client tagged with the delegation, and returns its working secret", async () => {
    const { fake, registrar } = await setup();
    const req = request({ agentType: "codex" });
    const identity = await registrar.registerAgent(req);

    const clientId = keycloakClientId("codex", req.delegationId);
    expect(identity).toEqual({ clientId, clientSecret: expect.any(String), objectId: expect.any(String), displayName: req.displayName });
    const held = fake.client(clientId);
    expect(held?.id).toBe(identity.objectId);
    expect(held?.secret).toBe(identity.clientSecret);
    expect(held?.posted).toEqual({
      clientId,
      name: req.displayName,
      enabled: true,
      serviceAccountsEnabled: true,
      directAccessGrantsEnabled: false,
      standardFlowEnabled: false,
      publicClient: false,
      protocol: "openid-connect",
      attributes: {
        agent_type: "codex",
        delegator_did: req.delegatorDid,
        delegation_id: req.delegationId,
        expires_at: "2031-05-06T07:08:09.000Z",
        [GOVERNED_ATTRIBUTE]: "true",
      },
    });
    expect(await tokenStatus(fake, clientId, identity.clientSecret)).toBe(200);
  });

  it("after a create that answered 409 having created the client: adopts it with a fresh, working secret", async () => {
    const { fake, registrar } = await setup();
    fake.inject("create", { kind: "conflictAfterCreate" });
    const req = request();
    const identity = await registrar.registerAgent(req);

    expect(fake.clients()).toHaveLength(1);
    const held = fake.client(identity.clientId);
    expect(held?.id).toBe(identity.objectId);
    expect(held?.secret).toBe(identity.clientSecret);
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(1);
    const lookup = fake.requestsTo("list")[0];
    expect(new URL(lookup?.url ?? "", fake.url).searchParams.get("clientId")).toBe(identity.clientId);
    expect(await tokenStatus(fake, identity.clientId, identity.clientSecret)).toBe(200);
  });

  it("registering the same delegation again replaces the secret: the old one stops working", async () => {
    const { fake, registrar } = await setup();
    const req = request();
    const first = await registrar.registerAgent(req);
    const second = await registrar.registerAgent(req);

    expect(second.objectId).toBe(first.objectId);
    expect(second.clientSecret).not.toBe(first.clientSecret);
    expect(fake.clients()).toHaveLength(1);
    expect(await tokenStatus(fake, second.clientId, second.clientSecret)).toBe(200);
    expect(await tokenStatus(fake, first.clientId, first.clientSecret)).toBe(401);
  });

  it("refuses to adopt a client tagged with another delegation, and leaves it untouched", async () => {
    const { fake, registrar } = await setup();
    const req = request();
    const foreign = fake.seedClient({
      clientId: keycloakClientId(req.agentType, req.delegationId),
      serviceAccountsEnabled: true,
      attributes: { delegation_id: "del_SOMEONE_ELSE", [GOVERNED_ATTRIBUTE]: "true" },
    });
    const err = await failure(registrar.registerAgent(req));
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_CLIENT_CONFLICT" });
    expect(fake.client(foreign.clientId)?.secret).toBe(foreign.secret);
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(0);
  });

  it("a 201 without a Location header is a malformed answer", async () => {
    const { fake, registrar } = await setup();
    fake.failNext("create", 201, { body: "" });
    const err = await failure(registrar.registerAgent(request()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).failure).toBe("malformed");
  });

  it("a secret answer without a value is a malformed answer", async () => {
    const { fake, registrar } = await setup();
    fake.failNext("getSecret", 200, { body: { type: "secret" } });
    const err = await failure(registrar.registerAgent(request()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).failure).toBe("malformed");
  });

  it("an unexpected 400 is UNAVAILABLE KEYCLOAK_REJECTED with the status and Keycloak's words", async () => {
    const { fake, registrar } = await setup();
    fake.failNext("create", 400, { body: { error: "invalid_input", error_description: "Invalid characters in clientId" } });
    const err = await failure(registrar.registerAgent(request()));
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_REJECTED", metadata: { status: "400" } });
    expect(err.message).toContain("400");
    expect(err.message).toContain("Invalid characters in clientId");
  });
});

describe("deleteAgent", () => {
  async function registered() {
    const t = await setup();
    const req = request();
    const identity = await t.registrar.registerAgent(req);
    return { ...t, req, identity };
  }

  it("deletes by object id, and a second delete (404) counts as deleted", async () => {
    const { fake, registrar, req, identity } = await registered();
    const ref = { delegationId: req.delegationId, clientId: identity.clientId, objectId: identity.objectId };
    await registrar.deleteAgent(ref);
    expect(fake.clients()).toHaveLength(0);
    await expect(registrar.deleteAgent(ref)).resolves.toBeUndefined();
    expect(fake.requestsTo("delete")).toHaveLength(2);
  });

  it("finds the client by clientId when the object id is unknown", async () => {
    const { fake, registrar, req, identity } = await registered();
    await registrar.deleteAgent({ delegationId: req.delegationId, clientId: identity.clientId, objectId: "" });
    expect(fake.clients()).toHaveLength(0);
  });

  it("finds the client by its delegation_id attribute when clientId is empty too", async () => {
    const { fake, registrar, req } = await registered();
    await registrar.registerAgent(request()); // another delegation, which must survive
    await registrar.deleteAgent({ delegationId: req.delegationId, clientId: "", objectId: "" });
    expect(fake.clients().map((c) => c.attributes.delegation_id)).not.toContain(req.delegationId);
    expect(fake.clients()).toHaveLength(1);
    const search = fake.requestsTo("list").at(-1);
    expect(new URL(search?.url ?? "", fake.url).searchParams.get("q")).toBe(`delegation_id:${req.delegationId}`);
  });

  it("an empty lookup counts as deleted", async () => {
    const { fake, registrar } = await setup();
    await registrar.deleteAgent({ delegationId: "del_GONE", clientId: "", objectId: "" });
    await registrar.deleteAgent({ delegationId: "del_GONE", clientId: "agent-claude-code-del_GONE", objectId: "" });
    expect(fake.requestsTo("delete")).toHaveLength(0);
  });

  it("does not delete a client found by name but tagged with another delegation", async () => {
    const { fake, registrar } = await setup();
    const foreign = fake.seedClient({ clientId: "agent-claude-code-del_X", attributes: { delegation_id: "del_Y", [GOVERNED_ATTRIBUTE]: "true" } });
    await registrar.deleteAgent({ delegationId: "del_X", clientId: foreign.clientId, objectId: "" });
    expect(fake.client(foreign.clientId)).toBeDefined();
  });
});

describe("listAgents", () => {
  it("pages through every client the broker governs, and only those", async () => {
    const { fake, registrar } = await setup({ pageSize: 2 });
    const made: { req: RegisterAgentRequest; identity: AgentIdentity }[] = [];
    for (let i = 0; i < 5; i++) {
      const req = request();
      made.push({ req, identity: await registrar.registerAgent(req) });
    }
    fake.seedClient({ clientId: "operator-app", attributes: { delegation_id: "del_NOT_OURS" } });
    fake.seedClient({ clientId: "aaa-first-by-name" });

    const listed = await collect(registrar.listAgents());
    expect(listed).toHaveLength(5);
    const byDelegation = (a: { delegationId: string }, b: { delegationId: string }) => a.delegationId.localeCompare(b.delegationId);
    expect(listed.sort(byDelegation)).toEqual(
      made
        .map(({ req, identity }) => ({ delegationId: req.delegationId, clientId: identity.clientId, objectId: identity.objectId }))
        .sort(byDelegation),
    );
    const pages = fake.requestsTo("list").map((r) => new URL(r.url, fake.url).searchParams);
    expect(pages.map((p) => [p.get("q"), p.get("first"), p.get("max")])).toEqual([
      [`${GOVERNED_ATTRIBUTE}:true`, "0", "2"],
      [`${GOVERNED_ATTRIBUTE}:true`, "2", "2"],
      [`${GOVERNED_ATTRIBUTE}:true`, "4", "2"],
    ]);
  });

  it("skips nothing when the caller deletes while iterating", async () => {
    const { fake, registrar } = await setup({ pageSize: 2 });
    for (let i = 0; i < 5; i++) await registrar.registerAgent(request());
    let seen = 0;
    for await (const ref of registrar.listAgents()) {
      seen++;
      await registrar.deleteAgent(ref);
    }
    expect(seen).toBe(5);
    expect(fake.clients()).toHaveLength(0);
  });
});

describe("transport failures", () => {
  it("a Keycloak slower than the attempt deadline is DEADLINE_EXCEEDED", async () => {
    const { fake, registrar } = await setup();
    fake.inject("list", { kind: "delay", ms: 1_000 }, 5);
    const err = await failure(collect(registrar.listAgents()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect(asCaller(err)).toMatchObject({ code: "DEADLINE_EXCEEDED", failure: "timeout" });
    expect(fake.requestsTo("list")).toHaveLength(3); // a GET: retried twice
  });

  it("a timed-out create is not repeated", async () => {
    const { fake, registrar } = await setup();
    fake.inject("create", { kind: "delay", ms: 1_000 });
    const err = await failure(registrar.registerAgent(request()));
    expect(asCaller(err)).toMatchObject({ code: "DEADLINE_EXCEEDED" });
    expect(fake.requestsTo("create")).toHaveLength(1);
  });

  it("a refused connection is UNAVAILABLE", async () => {
    const { fake, registrar } = await setup();
    await fake.refuseConnections();
    const err = await failure(registrar.registerAgent(request()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_UNAVAILABLE", failure: "unreachable" });
  });

  it("a refused connection is retried even for create (the request never arrived)", async () => {
    let fake: KeycloakFake | undefined;
    // The HttpClient's backoff sleep is where Keycloak comes back.
    const t = await setup({ http: { sleep: async () => fake?.acceptConnections() } });
    fake = t.fake;
    await collect(t.registrar.listAgents()); // warm the admin token
    await fake.refuseConnections();
    const identity = await t.registrar.registerAgent(request());
    expect(fake.requestsTo("create")).toHaveLength(1);
    expect(fake.client(identity.clientId)?.secret).toBe(identity.clientSecret);
  });

  it("a 500 on a GET is retried, then succeeds", async () => {
    const { fake, registrar } = await setup();
    fake.failNext("getSecret", 500);
    const identity = await registrar.registerAgent(request());
    expect(fake.requestsTo("getSecret")).toHaveLength(2);
    expect(fake.client(identity.clientId)?.secret).toBe(identity.clientSecret);
  });

  it("a 500 on create is not retried", async () => {
    const { fake, registrar } = await setup();
    fake.failNext("create", 500, { times: 3 });
    const err = await failure(registrar.registerAgent(request()));
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_UNAVAILABLE", status: 500 });
    expect(fake.requestsTo("create")).toHaveLength(1);
  });

  it("a 429 with Retry-After: 1 waits about a second, then succeeds, even for create", async () => {
    const { fake, registrar } = await setup();
    fake.failNext("create", 429, { retryAfter: "1" });
    await registrar.registerAgent(request());
    const [first, second] = fake.requestsTo("create");
    expect(second).toBeDefined();
    const waited = (second?.at ?? 0) - (first?.at ?? 0);
    expect(waited).toBeGreaterThanOrEqual(950);
    expect(waited).toBeLessThan(1_800);
    expect(fake.clients()).toHaveLength(1);
  });

  it("a dropped connection on a GET is retried; on create it is not", async () => {
    const { fake, registrar } = await setup();
    fake.inject("getSecret", { kind: "drop" });
    await registrar.registerAgent(request());
    expect(fake.requestsTo("getSecret")).toHaveLength(2);

    fake.inject("create", { kind: "drop" });
    const err = await failure(registrar.registerAgent(request()));
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", failure: "unreachable" });
    expect(fake.requestsTo("create")).toHaveLength(2); // one per registerAgent
  });
});

describe("rotateSecret", () => {
  async function registered(options: SetupOptions = {}) {
    const t = await setup(options);
    const req = request();
    const identity = await t.registrar.registerAgent(req);
    const ref = { delegationId: req.delegationId, clientId: identity.clientId, objectId: identity.objectId };
    return { ...t, req, identity, ref };
  }

  it("regenerates the secret: the new one works at Keycloak, the old one no longer does", async () => {
    const { fake, registrar, identity, ref } = await registered();
    const rotated = await registrar.rotateSecret(ref);

    expect(rotated).toEqual(expect.any(String));
    expect(rotated).not.toBe(identity.clientSecret);
    expect(fake.client(identity.clientId)?.secret).toBe(rotated);
    expect(await tokenStatus(fake, identity.clientId, rotated ?? "")).toBe(200);
    expect(await tokenStatus(fake, identity.clientId, identity.clientSecret)).toBe(401);
    // Looked up by object id (to check its tags), regenerated once, its rotated predecessor ended.
    expect(fake.requestsTo("get").map((r) => r.path)).toEqual([`/admin/realms/${fake.realm}/clients/${identity.objectId}`]);
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(1);
    expect(fake.requestsTo("invalidateRotatedSecret").map((r) => r.path)).toEqual([
      `/admin/realms/${fake.realm}/clients/${identity.objectId}/client-secret/rotated`,
    ]);
  });

  it("ends the previous secret at once even under a secret-rotation policy, which would keep it as rotated", async () => {
    const { fake, registrar, identity, ref } = await registered({ fake: { secretRotation: true } });
    const first = await registrar.rotateSecret(ref);
    const second = await registrar.rotateSecret(ref);

    expect(fake.client(identity.clientId)?.rotatedSecret).toBeUndefined();
    expect(await tokenStatus(fake, identity.clientId, second ?? "")).toBe(200);
    for (const old of [identity.clientSecret, first ?? ""]) expect(await tokenStatus(fake, identity.clientId, old)).toBe(401);
  });

  it("finds the client by clientId, else by its delegation_id attribute, and touches no other delegation's", async () => {
    const { fake, registrar, identity, req } = await registered();
    const other = await registrar.registerAgent(request());

    const byClientId = await registrar.rotateSecret({ delegationId: req.delegationId, clientId: identity.clientId, objectId: "" });
    expect(new URL(fake.requestsTo("list").at(-1)?.url ?? "", fake.url).searchParams.get("clientId")).toBe(identity.clientId);
    const byDelegation = await registrar.rotateSecret({ delegationId: req.delegationId, clientId: "", objectId: "" });
    expect(new URL(fake.requestsTo("list").at(-1)?.url ?? "", fake.url).searchParams.get("q")).toBe(`delegation_id:${req.delegationId}`);

    expect(await tokenStatus(fake, identity.clientId, byDelegation ?? "")).toBe(200);
    expect(await tokenStatus(fake, identity.clientId, byClientId ?? "")).toBe(401);
    expect(fake.client(other.clientId)?.secret).toBe(other.clientSecret);
  });

  it("renews the admin token once when Keycloak answers 401 mid-rotation, then regenerates", async () => {
    const { fake, registrar, identity, ref } = await registered();
    fake.failNext("regenerateSecret", 401); // the registrar's cached token refused at the regeneration itself
    const rotated = await registrar.rotateSecret(ref);
    expect(adminTokenRequests(fake)).toHaveLength(2);
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(2); // 401 (not processed), then the repeat
    expect(await tokenStatus(fake, identity.clientId, rotated ?? "")).toBe(200);
    expect(await tokenStatus(fake, identity.clientId, identity.clientSecret)).toBe(401);

    fake.expireTokens(); // dead before the lookup
    const again = await registrar.rotateSecret(ref);
    expect(adminTokenRequests(fake)).toHaveLength(3);
    expect(fake.client(identity.clientId)?.secret).toBe(again);
  });

  it("a 429 on the regeneration is repeated (not processed); a 500 on the lookup (a GET) too", async () => {
    const { fake, registrar, identity, ref } = await registered();
    fake.failNext("regenerateSecret", 429, { retryAfter: "0" });
    fake.failNext("get", 500);
    const rotated = await registrar.rotateSecret(ref);
    expect(fake.requestsTo("get")).toHaveLength(2);
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(2);
    expect(await tokenStatus(fake, identity.clientId, rotated ?? "")).toBe(200);
  });

  it("a 500 on the regeneration is not repeated: it may still be running, and a late one would replace the secret answered", async () => {
    const { fake, registrar, identity, ref } = await registered();
    fake.failNext("regenerateSecret", 500, { times: 3 });
    const err = await failure(registrar.rotateSecret(ref));
    expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_UNAVAILABLE", status: 500, retryable: true });
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(1);
    expect(await tokenStatus(fake, identity.clientId, identity.clientSecret)).toBe(200); // nothing changed
  });

  it("a timed-out or dropped regeneration is not repeated either", async () => {
    const { fake, registrar, ref } = await registered();
    fake.inject("regenerateSecret", { kind: "delay", ms: 1_000 });
    expect(asCaller(await failure(registrar.rotateSecret(ref)))).toMatchObject({ code: "DEADLINE_EXCEEDED", failure: "timeout" });
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(1);

    fake.inject("regenerateSecret", { kind: "drop" });
    expect(asCaller(await failure(registrar.rotateSecret(ref)))).toMatchObject({ code: "UNAVAILABLE", failure: "unreachable" });
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(2);
  });

  it("a client that is gone is a non-retryable KEYCLOAK_CLIENT_GONE, by any reference", async () => {
    const { fake, registrar, req, identity, ref } = await registered();
    await registrar.deleteAgent(ref);
    for (const [r, named] of [
      [ref, identity.clientId],
      [{ ...ref, objectId: "" }, identity.clientId],
      [{ delegationId: req.delegationId, clientId: "", objectId: "" }, req.delegationId],
    ] as const) {
      const err = await failure(registrar.rotateSecret(r));
      expect(err).toBeInstanceOf(UpstreamError);
      expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_CLIENT_GONE", failure: "rejected", retryable: false });
      expect(err.message).toContain(named);
      expect(err.message).toContain("no longer exists");
    }
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(0);
  });

  it("a client deleted between the lookup and the regeneration is gone too", async () => {
    const { fake, registrar, ref } = await registered();
    fake.failNext("regenerateSecret", 404);
    expect(asCaller(await failure(registrar.rotateSecret(ref)))).toMatchObject({ reason: "KEYCLOAK_CLIENT_GONE", retryable: false });
  });

  it("refuses a client tagged with another delegation, or not governed (the broker's own), and leaves its secret alone", async () => {
    const { fake, registrar } = await setup();
    const foreign = fake.seedClient({
      clientId: "agent-claude-code-del_X",
      serviceAccountsEnabled: true,
      attributes: { delegation_id: "del_Y", [GOVERNED_ATTRIBUTE]: "true" },
    });
    const admin = fake.client(fake.adminClientId);
    for (const ref of [
      { delegationId: "del_X", clientId: foreign.clientId, objectId: "" },
      { delegationId: "del_X", clientId: foreign.clientId, objectId: foreign.id },
      { delegationId: "", clientId: "", objectId: admin?.id ?? "" },
    ]) {
      const err = await failure(registrar.rotateSecret(ref));
      expect(asCaller(err)).toMatchObject({ code: "UNAVAILABLE", reason: "KEYCLOAK_CLIENT_CONFLICT", failure: "rejected", retryable: false });
    }
    expect(fake.client(foreign.clientId)?.secret).toBe(foreign.secret);
    expect(fake.client(fake.adminClientId)?.secret).toBe(fake.adminClientSecret);
    expect(fake.requestsTo("regenerateSecret")).toHaveLength(0);
  });
});

describe("secrets", () => {
  it("never appear in an error message or a log line", async () => {
    const lines: string[] = [];
    const log = createLogger({ level: "trace", destination: { write: (s: string) => void lines.push(s) } });
    const { fake, registrar } = await setup({ log });
    const errors: unknown[] = [];
    const attempt = async (p: Promise<unknown>) => p.catch((err: unknown) => void errors.push(err));

    const req = request();
    const returned = [await registrar.registerAgent(req), await registrar.registerAgent(req)]; // create, then adopt
    fake.expireTokens();
    returned.push(await registrar.registerAgent(request())); // 401 and renewal
    const ref = { delegationId: req.delegationId, clientId: returned[0]!.clientId, objectId: returned[0]!.objectId };
    const rotated = [await registrar.rotateSecret(ref)];
    fake.failNext("regenerateSecret", 401);
    rotated.push(await registrar.rotateSecret(ref)); // 401 and renewal mid-rotation
    fake.failNext("regenerateSecret", 400, { body: { errorMessage: `cannot regenerate for ${fake.adminClientSecret}` } });
    await attempt(registrar.rotateSecret(ref));
    await attempt(registrar.rotateSecret({ ...ref, delegationId: "del_SOMEONE_ELSE" }));
    fake.failNext("create", 400, { body: { errorMessage: `cannot accept ${fake.adminClientSecret}` } });
    await attempt(registrar.registerAgent(request()));
    fake.failNext("getSecret", 403);
    await attempt(registrar.registerAgent(request()));
    fake.inject("list", { kind: "delay", ms: 1_000 }, 3);
    await attempt(collect(registrar.listAgents()));
    for (const ref of await collect(registrar.listAgents())) await registrar.deleteAgent(ref);
    await fake.refuseConnections();
    await attempt(registrar.registerAgent(request()));
    await fake.acceptConnections();
    const wrong = createKeycloakRegistrar({ url: fake.url, realm: fake.realm, adminClientId: fake.adminClientId, adminClientSecret: "not-the-secret-4711", log });
    closers.push(() => wrong.close());
    await attempt(wrong.registerAgent(request()));

    expect(errors).toHaveLength(7);
    const secrets = [
      fake.adminClientSecret,
      "not-the-secret-4711",
      ...returned.map((i) => i.clientSecret),
      ...rotated.map((s) => s ?? ""),
      ...fake.accessTokens(),
    ];
    expect(rotated.every((s) => (s ?? "").length >= 16)).toBe(true);
    const texts = [...lines, ...errors.flatMap(describeError)];
    expect(lines.length).toBeGreaterThan(5);
    for (const text of texts) for (const secret of secrets) expect(text).not.toContain(secret);
  });
});

/** Every message, reason and metadata value along an error's cause chain. */
function describeError(err: unknown): string[] {
  const out: string[] = [];
  for (let e = err as { message?: unknown; cause?: unknown; metadata?: unknown; stack?: unknown } | undefined, i = 0; e && i < 6; i++) {
    out.push(String(e.message), String(e.stack), JSON.stringify(e.metadata ?? {}));
    e = e.cause as typeof e;
  }
  return out;
}

describe("the fake Keycloak itself", () => {
  it("accepts client_secret_basic, answers with no-store, and rejects bad credentials like Keycloak", async () => {
    const fake = await KeycloakFake.start();
    closers.push(() => fake.close());
    const tokenUrl = `${fake.url}/realms/${fake.realm}/protocol/openid-connect/token`;
    const form = { "content-type": "application/x-www-form-urlencoded" };
    const basic = (id: string, secret: string) =>
      `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;

    const ok = await fetch(tokenUrl, { method: "POST", headers: { ...form, authorization: basic(fake.adminClientId, fake.adminClientSecret) }, body: "grant_type=client_credentials" });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("cache-control")).toBe("no-store");
    expect(await ok.json()).toMatchObject({ token_type: "Bearer", expires_in: 300, refresh_expires_in: 0, "not-before-policy": 0 });

    const badSecret = await fetch(tokenUrl, { method: "POST", headers: { ...form, authorization: basic(fake.adminClientId, "nope") }, body: "grant_type=client_credentials" });
    expect([badSecret.status, await badSecret.json()]).toEqual([401, { error: "unauthorized_client", error_description: "Invalid client or Invalid client credentials" }]);
    const unknown = await fetch(tokenUrl, { method: "POST", headers: form, body: "grant_type=client_credentials&client_id=ghost&client_secret=x" });
    expect([unknown.status, ((await unknown.json()) as { error?: string }).error]).toEqual([401, "invalid_client"]);
    // JSON is not a form: Keycloak sees no client_id.
    const json = await fetch(tokenUrl, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(json.status).toBe(400);

    const admin = await fetch(`${fake.url}/admin/realms/${fake.realm}/clients`, { headers: { authorization: "Bearer forged" } });
    expect([admin.status, await admin.json()]).toEqual([401, { error: "HTTP 401 Unauthorized" }]);
  });

  it("under a secret-rotation policy keeps the previous secret valid until DELETE .../client-secret/rotated (204)", async () => {
    const fake = await KeycloakFake.start({ secretRotation: true });
    closers.push(() => fake.close());
    const seeded = fake.seedClient({ clientId: "svc", serviceAccountsEnabled: true });
    const tokenRes = await fetch(`${fake.url}/realms/${fake.realm}/protocol/openid-connect/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", client_id: fake.adminClientId, client_secret: fake.adminClientSecret }).toString(),
    });
    const { access_token: token } = (await tokenRes.json()) as { access_token: string };
    const secretUrl = `${fake.url}/admin/realms/${fake.realm}/clients/${seeded.id}/client-secret`;
    const regenerated = await fetch(secretUrl, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    const { type, value } = (await regenerated.json()) as { type: string; value: string };
    expect([regenerated.status, type]).toEqual([200, "secret"]);
    expect(await tokenStatus(fake, "svc", value)).toBe(200);
    expect(await tokenStatus(fake, "svc", seeded.secret ?? "")).toBe(200); // rotated, still accepted

    const invalidated = await fetch(`${secretUrl}/rotated`, { method: "DELETE", headers: { authorization: `Bearer ${token}` } });
    expect(invalidated.status).toBe(204);
    expect(await tokenStatus(fake, "svc", seeded.secret ?? "")).toBe(401);
    expect(await tokenStatus(fake, "svc", value)).toBe(200);
    const again = await fetch(`${secretUrl}/rotated`, { method: "DELETE", headers: { authorization: `Bearer ${token}` } });
    expect(again.status).toBe(204); // nothing rotated: still 204
  });

  it("parses Keycloak's q syntax, quoted values included", () => {
    expect(parseSearchQuery(`delegation_id:del_1 llm_broker_governed:true name:"a \\"b\\" c"`)).toEqual({
      delegation_id: "del_1",
      llm_broker_governed: "true",
      name: 'a "b" c',
    });
  });

  it("the harness registers into the fake and reports what it holds", async () => {
    const h = await startKeycloakHarness();
    closers.push(() => h.close());
    const req = request();
    const identity = await h.registrar.registerAgent(req);
    expect(await h.identities()).toEqual([{ delegationId: req.delegationId, clientId: identity.clientId }]);
    await h.registrar.deleteAgent({ delegationId: req.delegationId, clientId: "", objectId: "" });
    expect(await h.identities()).toEqual([]);
  });
});
