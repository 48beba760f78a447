/**
 * AUTH_MODE=jwt: bearer access tokens verified against the issuer's JWKS (a
 * loopback fake), through the real listeners with the production defaults,
 * and the key cache through the authenticator itself. Every rule of the
 * README's "Authentication" section has a test here: who a valid token is,
 * what is UNAUTHENTICATED (missing, malformed, expired beyond the skew,
 * foreign audience or issuer, `alg: none`, HS256 with the public key, an
 * unknown key), key rotation, an unreachable JWKS (UNAVAILABLE), the dev
 * header being ignored, configurable claim paths, and that no token is ever
 * echoed in an error or written to the log.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { Principal } from "../../src/domain/index.js";
import { DelegationState, ErrorDetailSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { createLogger } from "../../src/logging.js";
import { createJwtAuthenticator, type JwtAuthenticatorOptions } from "../../src/server/jwt-authenticator.js";
import { JwksFake, algNoneToken, createSigningKey, hs256WithPublicKey, mintToken } from "../fakes/jwks-fake.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { type GrpcError, errorDetailOf } from "../helpers/grpc-client.js";
import { callerCode } from "../helpers/caller-code.js";

const ADMIN_ROLE = "llm-broker-admin";
const MISSING = "del_01AAAAAAAAAAAAAAAAAAAAAAAA";

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

interface Failure {
  code: number;
  message: string;
  reason: string | undefined;
}

/** Runs a grpc-js call expected to fail; its code, message and ErrorDetail reason. */
async function grpcFailure(call: Promise<unknown>): Promise<Failure> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e as GrpcError,
  );
  return { code: err.code, message: err.details, reason: errorDetailOf(err)?.reason };
}

/** Runs a Connect call expected to fail. */
async function connectFailure(call: Promise<unknown>): Promise<Failure> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConnectError);
  const ce = err as ConnectError;
  return { code: ce.code, message: ce.rawMessage, reason: ce.findDetails(ErrorDetailSchema)[0]?.reason };
}

/** The parts of a token that must never appear in an error or a log line. */
function secretsOf(token: string): string[] {
  return [token, ...token.split(".").filter((part) => part.length >= 16)];
}

/** A pino destination that keeps every line. */
function captureLog() {
  const lines: string[] = [];
  return { lines, log: createLogger({ level: "debug", destination: { write: (s: string) => void lines.push(s) } }) };
}

/** Moves Date (only) forward, e.g. past jose's 30 s JWKS re-fetch cooldown; real timers keep running. */
function jumpClock(ms: number): void {
  if (!vi.isFakeTimers()) vi.useFakeTimers({ toFake: ["Date"], shouldAdvanceTime: true });
  vi.setSystemTime(Date.now() + ms);
}

describe("AUTH_MODE=jwt through the broker", () => {
  let issuer: JwksFake;
  let t: TestBroker;
  const captured = captureLog();
  /** Every token presented in this suite, to scan the log for at the end. */
  const presented: string[] = [];
  const token = async (...args: Parameters<JwksFake["token"]>) => {
    const tok = await issuer.token(...args);
    presented.push(tok);
    return tok;
  };
  const delegator = (did: string) => token({ claims: { sub: did.split("/").pop(), did, azp: "gsap-ui" } });

  beforeAll(async () => {
    issuer = await JwksFake.start();
    t = await startTestBroker({ env: { ...issuer.env(), ALLOW_DEV_DRIVERS: "true" }, overrides: { log: captured.log } });
  });
  afterAll(async () => {
    await t?.close();
    await issuer?.close();
  });

  it("a valid token is its did claim (delegator), its roles claim (admin) or its azp (agent)", async () => {
    const alice = await delegator(ALICE);
    const created = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, bearer(alice));
    const d = created.delegation!;
    expect(d.delegatorDid).toBe(ALICE);
    expect((await t.grpc.unary("getDelegation", { delegationId: d.delegationId }, bearer(alice))).delegation!.delegatorDid).toBe(ALICE);
    expect((await t.connect.getDelegation({ delegationId: d.delegationId }, { headers: bearer(alice) })).delegation!.delegationId).toBe(d.delegationId);

    // Bob is someone else: Alice's delegation does not exist for him.
    const bob = await delegator(BOB);
    expect(await grpcFailure(t.grpc.unary("getDelegation", { delegationId: d.delegationId }, bearer(bob)))).toMatchObject({
      code: Code.NotFound,
      reason: "DELEGATION_NOT_FOUND",
    });

    // The agent, with a token issued to its own client (no DID): reads and asks, nothing more.
    const agent = await token({ claims: { sub: "service-account-agent", azp: d.agentClientId } });
    expect((await t.grpc.unary("getDelegation", { delegationId: d.delegationId }, bearer(agent))).delegation!.delegationId).toBe(d.delegationId);
    expect((await t.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "ls -la" }, bearer(agent))).reason).toBe("allowed");
    expect(await grpcFailure(t.grpc.unary("revokeDelegation", { delegationId: d.delegationId }, bearer(agent)))).toMatchObject({
      code: Code.NotFound,
    });
    // client_id (Keycloak's client-credentials tokens) and appid (Entra v1) name the client just as azp does.
    for (const claim of ["client_id", "appid"]) {
      const other = await token({ claims: { sub: "sa", [claim]: d.agentClientId } });
      expect((await t.grpc.unary("getDelegation", { delegationId: d.delegationId }, bearer(other))).delegation!.delegationId).toBe(d.delegationId);
    }

    // The admin role (the GSAP broker's service account): sees all, and alone may revoke a delegator context.
    const admin = await token({ claims: { sub: "gsap-broker", azp: "gsap-broker", roles: [ADMIN_ROLE] } });
    const listed = await t.grpc.unary("listAgents", { delegatorDid: ALICE }, bearer(admin));
    expect(listed.delegations.map((x) => x.delegationId)).toContain(d.delegationId);
    expect(await grpcFailure(t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-alice" }, bearer(alice)))).toMatchObject({
      code: Code.PermissionDenied,
      reason: "ADMIN_ONLY",
    });
    const revoked = await t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-alice" }, bearer(admin));
    expect(revoked.revokedDelegationIds).toContain(d.delegationId);
  });

  it("no Authorization header, or one that is not 'Bearer <jwt>', is UNAUTHENTICATED", async () => {
    const valid = await delegator(ALICE);
    expect(await grpcFailure(t.grpc.unary("getDelegation", { delegationId: MISSING }))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_MISSING",
    });
    expect(await connectFailure(t.connect.getDelegation({ delegationId: MISSING }))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_MISSING",
    });
    const malformed = [
      `Basic ${Buffer.from("alice:secret").toString("base64")}`,
      "Bearer",
      valid,
      `Bearer  ${valid}`,
      `Bearer ${valid} trailing`,
      "Bearer not-a-jwt",
      `Bearer ${valid}.extra`,
      `Bearer ${valid.replace(".", "!")}`,
    ];
    for (const authorization of malformed) {
      const f = await grpcFailure(t.grpc.unary("listAgents", {}, { authorization }));
      expect(f, authorization.slice(0, 40)).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_MALFORMED" });
      const c = await connectFailure(t.connect.listAgents({}, { headers: { authorization } }));
      expect(c, authorization.slice(0, 40)).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_MALFORMED" });
    }
    // Longer than any access token (16 KiB); over HTTP/1.1 Node refuses such a header itself (431).
    expect(await grpcFailure(t.grpc.unary("listAgents", {}, { authorization: `Bearer ${"a".repeat(17 * 1024)}.b.c` }))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_MALFORMED",
    });
    // A scheme with nothing after it (grpc-js and HTTP/1.1 trim the value differently).
    expect(await grpcFailure(t.grpc.unary("listAgents", {}, { authorization: "Bearer " })), "Bearer ").toMatchObject({ code: Code.Unauthenticated });
    // A structurally fine token whose parts are not JSON.
    expect(await grpcFailure(t.grpc.unary("listAgents", {}, bearer("aaaa.bbbb.cccc")))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_INVALID",
    });
  });

  it("an expired token is UNAUTHENTICATED beyond the 30 s clock skew and accepted within it; exp is required", async () => {
    const claims = { did: ALICE };
    expect((await t.grpc.unary("listAgents", {}, bearer(await token({ claims, expiresIn: -10 })))).delegations).toBeDefined();
    expect(await grpcFailure(t.grpc.unary("listAgents", {}, bearer(await token({ claims, expiresIn: -45 }))))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_EXPIRED",
    });
    expect(await connectFailure(t.connect.listAgents({}, { headers: bearer(await token({ claims, expiresIn: -3600 })) }))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_EXPIRED",
    });
    expect(await grpcFailure(t.grpc.unary("listAgents", {}, bearer(await token({ claims, expiresIn: null }))))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_INVALID",
    });
    // Not yet valid: the same skew applies to nbf.
    expect((await t.grpc.unary("listAgents", {}, bearer(await token({ claims, notBefore: 10 })))).delegations).toBeDefined();
    expect(await grpcFailure(t.grpc.unary("listAgents", {}, bearer(await token({ claims, notBefore: 120 }))))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_INVALID",
    });
  });

  it("a token for another audience, or from another issuer, is UNAUTHENTICATED", async () => {
    const claims = { did: ALICE };
    for (const options of [
      { audience: "account" },
      { audience: null },
      { audience: [`${issuer.audience}-staging`, "account"] },
      { issuer: "https://login.example.com/realms/other" },
      { issuer: `${issuer.issuer}/` },
      { issuer: null },
    ]) {
      const f = await grpcFailure(t.grpc.unary("listAgents", {}, bearer(await token({ claims, ...options }))));
      expect(f, JSON.stringify(options)).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
    }
    // aud may be a list that contains ours.
    expect((await t.grpc.unary("listAgents", {}, bearer(await token({ claims, audience: ["account", issuer.audience] }))))).toBeDefined();
  });

  it("alg none, HS256 signed with the RSA public key, a disallowed algorithm and unknown keys are UNAUTHENTICATED", async () => {
    const payload = issuer.claims({ claims: { did: ALICE, roles: [ADMIN_ROLE] } });
    const stranger = await createSigningKey("RS256");
    const impostor = await createSigningKey("RS256", issuer.currentKey.kid);
    const rs512 = await createSigningKey("RS512", issuer.currentKey.kid);
    const attacks: Record<string, string> = {
      "alg none": algNoneToken(payload),
      "HS256 with the public key (PEM)": hs256WithPublicKey(issuer.currentKey, payload, "pem"),
      "HS256 with the public key (JWK)": hs256WithPublicKey(issuer.currentKey, payload, "jwk"),
      "RS512 (not in AUTH_JWT_ALGORITHMS)": await mintToken(rs512, issuer, { claims: { did: ALICE } }),
      "unknown key, unknown kid": await mintToken(stranger, issuer, { claims: { did: ALICE } }),
      "unknown key, the published kid": await mintToken(impostor, issuer, { claims: { did: ALICE } }),
      "a valid token with its signature cut": (await token({ claims: { did: ALICE } })).replace(/\.[^.]+$/, "."),
      "a valid token with another payload": (() => {
        const [h, , s] = presented.at(-1)!.split(".");
        return `${h}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.${s}`;
      })(),
    };
    for (const [name, tok] of Object.entries(attacks)) {
      presented.push(tok);
      const f = await grpcFailure(t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-any" }, bearer(tok)));
      expect(f, name).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
      const c = await connectFailure(t.connect.revokeDelegatorContext({ delegatorAcId: "ac-any" }, { headers: bearer(tok) }));
      expect(c, name).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
    }
  });

  it("the x-delegator-did header is ignored: a token for Alice with a header naming Bob acts as Alice", async () => {
    const alice = await delegator(ALICE);
    const bobs = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-bob" }, bearer(await delegator(BOB)));
    const created = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice-2" }, { ...bearer(alice), ...as(BOB) });
    expect(created.delegation!.delegatorDid).toBe(ALICE);
    const bobsId = bobs.delegation!.delegationId;
    expect(await grpcFailure(t.grpc.unary("getDelegation", { delegationId: bobsId }, { ...bearer(alice), ...as(BOB) }))).toMatchObject({
      code: Code.NotFound,
    });
    expect(await grpcFailure(t.grpc.unary("revokeDelegation", { delegationId: bobsId }, { ...bearer(alice), ...as(BOB) }))).toMatchObject({
      code: Code.NotFound,
    });
    // The header alone is no identity at all (in dev mode its absence would even be the admin operator).
    expect(await grpcFailure(t.grpc.unary("getDelegation", { delegationId: bobsId }, as(BOB)))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "TOKEN_MISSING",
    });
    expect(await connectFailure(t.connect.listAgents({}, { headers: as(BOB) }))).toMatchObject({ code: Code.Unauthenticated });
    const listed = await t.grpc.unary("listAgents", { delegatorDid: BOB }, { ...bearer(alice), ...as(BOB) });
    expect(listed.delegations).toEqual([]);
    expect((await t.grpc.unary("getDelegation", { delegationId: bobsId }, bearer(await delegator(BOB)))).delegation!.state).toBe(
      DelegationState.ACTIVE,
    );
  });

  it("a did claim that is not a DID, or a token naming no caller, is UNAUTHENTICATED", async () => {
    for (const claims of [{ did: "alice" }, { did: 42 }, { did: ["did:web:example.com/user/alice"] }, { sub: "nobody" }]) {
      const f = await grpcFailure(t.grpc.unary("listAgents", {}, bearer(await token({ claims }))));
      expect(f, JSON.stringify(claims)).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
    }
  });

  it("no error message, error detail or log line contains a token", async () => {
    const tokens = [
      await token({ claims: { did: ALICE }, expiresIn: -600 }),
      await token({ claims: { did: ALICE }, audience: "account" }),
      await token({ claims: { did: "not a did" } }),
      algNoneToken(issuer.claims({ claims: { did: ALICE } })),
      hs256WithPublicKey(issuer.currentKey, issuer.claims({ claims: { did: ALICE } })),
    ];
    presented.push(...tokens);
    for (const tok of tokens) {
      for (const authorization of [`Bearer ${tok}`, tok, `Bearer ${tok}x!`]) {
        const err = (await t.grpc.unary("getDelegation", { delegationId: MISSING }, { authorization }).catch((e: unknown) => e)) as GrpcError;
        const detail = errorDetailOf(err);
        const shown = [err.details, detail?.reason ?? "", JSON.stringify(detail?.metadata ?? {})].join("\n");
        for (const secret of secretsOf(tok)) expect(shown).not.toContain(secret);
        const ce = (await t.connect.getDelegation({ delegationId: MISSING }, { headers: { authorization } }).catch((e: unknown) => e)) as ConnectError;
        for (const secret of secretsOf(tok)) expect(ce.rawMessage).not.toContain(secret);
      }
    }
    // The log saw every call of this suite (level debug); none of the tokens.
    const log = captured.lines.join("");
    expect(captured.lines.length).toBeGreaterThan(20);
    for (const tok of presented) for (const secret of secretsOf(tok)) expect(log).not.toContain(secret);
  });
});

describe("AUTH_MODE=jwt key rotation and an unreachable JWKS, with the production cache (30 s cooldown)", () => {
  let issuer: JwksFake;
  let t: TestBroker;

  beforeAll(async () => {
    issuer = await JwksFake.start();
    t = await startTestBroker({ env: { ...issuer.env(), ALLOW_DEV_DRIVERS: "true" } });
  });
  afterAll(async () => {
    vi.useRealTimers();
    await t?.close();
    await issuer?.close();
  });
  // The faked Date stays ahead for the whole suite: going back would put jose's fetch time in the future.

  const list = async (token: string) => t.grpc.unary("listAgents", {}, bearer(token));

  it("a new key verifies once the JWKS publishes it (re-fetched for an unknown kid, at most every 30 s); the dropped key stops", async () => {
    const oldKey = issuer.currentKey;
    const signedByOld = await issuer.token({ claims: { did: ALICE } });
    await list(signedByOld);
    expect(issuer.fetches).toBe(1);
    await list(signedByOld);
    expect(issuer.fetches).toBe(1); // cached

    const newKey = await issuer.rotate();
    expect(issuer.keys.map((k) => k.kid)).toEqual([newKey.kid]);
    const signedByNew = await issuer.token({ claims: { did: ALICE } }, newKey);
    // Within the cooldown an unknown kid does not re-fetch: a spray of made-up kids cannot hammer the issuer.
    for (let i = 0; i < 5; i++) {
      expect(await grpcFailure(list(signedByNew))).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
    }
    expect(issuer.fetches).toBe(1);
    // The old key is still cached until the set is re-fetched.
    await list(signedByOld);

    jumpClock(31_000);
    expect((await list(signedByNew)).delegations).toBeDefined();
    expect(issuer.fetches).toBe(2);
    // The set now cached has no old key: a token signed with it is refused (no re-fetch within the cooldown).
    const stillOld = await issuer.token({ claims: { did: ALICE } }, oldKey);
    expect(await grpcFailure(list(stillOld))).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
    jumpClock(31_000);
    expect(await grpcFailure(list(stillOld))).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
    expect(issuer.fetches).toBe(3); // it was looked for once more, and is gone
    expect((await list(signedByNew)).delegations).toBeDefined();
  });

  it("JWKS unreachable (refused, 503, or too slow): UNAVAILABLE for a token with an unknown kid; cached keys keep working", async () => {
    const cached = await issuer.token({ claims: { did: ALICE } });
    await list(cached);
    const fetched = issuer.fetches;

    // Refused connections.
    await issuer.down();
    const unseen = await issuer.addKey();
    const signedByUnseen = await issuer.token({ claims: { did: ALICE } }, unseen);
    jumpClock(31_000);
    const refused = await grpcFailure(list(signedByUnseen));
    expect(refused).toMatchObject({ code: Code.Unavailable, reason: "JWKS_UNAVAILABLE" });
    expect(refused.message).not.toContain("127.0.0.1");
    expect(await connectFailure(t.connect.listAgents({}, { headers: bearer(signedByUnseen) }))).toMatchObject({
      code: Code.Unavailable,
      reason: "JWKS_UNAVAILABLE",
    });
    expect((await list(cached)).delegations).toBeDefined();

    // Up, but answering 503.
    await issuer.up();
    issuer.failStatus = 503;
    expect(await grpcFailure(list(signedByUnseen))).toMatchObject({ code: Code.Unavailable, reason: "JWKS_UNAVAILABLE" });
    expect(issuer.fetches).toBe(fetched + 1);
    expect((await list(cached)).delegations).toBeDefined();

    // Back: the unseen key is fetched and verifies.
    issuer.failStatus = undefined;
    expect((await list(signedByUnseen)).delegations).toBeDefined();
    expect(issuer.fetches).toBe(fetched + 2);
  });
});

describe("AUTH_DID_CLAIM and AUTH_ROLES_CLAIM as dotted paths", () => {
  let issuer: JwksFake;
  let t: TestBroker;
  beforeAll(async () => {
    issuer = await JwksFake.start();
    t = await startTestBroker({ env: { ...issuer.env(), AUTH_DID_CLAIM: "ext.did", AUTH_ROLES_CLAIM: "realm_access.roles", ALLOW_DEV_DRIVERS: "true" } });
  });
  afterAll(async () => {
    await t?.close();
    await issuer?.close();
  });

  it("the DID comes from ext.did and the admin role from realm_access.roles, not from the top-level claims", async () => {
    const alice = await issuer.token({ claims: { ext: { did: ALICE }, azp: "gsap-ui" } });
    const created = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, bearer(alice));
    expect(created.delegation!.delegatorDid).toBe(ALICE);

    // A top-level did is not the configured claim: this caller has no DID, only a client.
    const topLevel = await issuer.token({ claims: { did: ALICE, azp: "gsap-ui" } });
    expect(await grpcFailure(t.grpc.unary("getDelegation", { delegationId: created.delegation!.delegationId }, bearer(topLevel)))).toMatchObject({
      code: Code.NotFound,
    });
    expect(await grpcFailure(t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, bearer(topLevel)))).toMatchObject({
      code: Code.PermissionDenied,
    });
    expect(await grpcFailure(t.grpc.unary("listAgents", {}, bearer(await issuer.token({ claims: { did: ALICE } })))))
      .toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
    expect(await grpcFailure(t.grpc.unary("listAgents", {}, bearer(await issuer.token({ claims: { ext: { did: "alice" } } })))))
      .toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });

    const admin = await issuer.token({ claims: { azp: "gsap-broker", realm_access: { roles: ["offline_access", ADMIN_ROLE] } } });
    const notAdmin = await issuer.token({ claims: { azp: "gsap-broker", roles: [ADMIN_ROLE], realm_access: { roles: ["offline_access"] } } });
    expect(await grpcFailure(t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-alice" }, bearer(notAdmin)))).toMatchObject({
      code: Code.PermissionDenied,
      reason: "ADMIN_ONLY",
    });
    const revoked = await t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-alice" }, bearer(admin));
    expect(revoked.revokedDelegationIds).toEqual([created.delegation!.delegationId]);
  });
});

describe("createJwtAuthenticator", () => {
  let issuer: JwksFake;
  const options = (over: Partial<JwtAuthenticatorOptions> = {}): JwtAuthenticatorOptions => ({
    issuers: ["https://other.example.com", issuer.issuer],
    audience: issuer.audience,
    jwksUrl: issuer.jwksUrl,
    algorithms: ["RS256", "ES256"],
    clockSkewSeconds: 30,
    didClaim: "did",
    rolesClaim: "roles",
    adminRole: ADMIN_ROLE,
    ...over,
  });
  const headers = (token: string) => new Headers(bearer(token));
  /** The error the authenticator throws, as the caller's code and its reason. */
  const refusal = async (p: Principal | Promise<Principal>) => {
    const err = (await Promise.resolve(p).then(
      () => {
        throw new Error("expected a refusal");
      },
      (e: unknown) => e,
    )) as { reason: string; message: string };
    return { code: callerCode(err), reason: err.reason, message: err.message };
  };

  beforeAll(async () => {
    issuer = await JwksFake.start();
  });
  afterAll(async () => {
    await issuer?.close();
  });
  afterEach(async () => {
    issuer.delayMs = 0;
    issuer.failStatus = undefined;
    issuer.malformedBody = undefined;
    await issuer.up();
  });

  it("gives the principal: did, admin from a roles list or space-separated string, client from azp, client_id or appid", async () => {
    const auth = createJwtAuthenticator(options());
    expect(await auth(headers(await issuer.token({ claims: { did: ALICE, azp: "gsap-ui" } })), undefined)).toEqual({
      did: ALICE,
      admin: false,
      clientId: "gsap-ui",
    });
    expect(await auth(headers(await issuer.token({ claims: { client_id: "gsap-broker", roles: `uma ${ADMIN_ROLE}` } })), undefined)).toEqual({
      did: "",
      admin: true,
      clientId: "gsap-broker",
    });
    expect(await auth(headers(await issuer.token({ claims: { appid: "agent-app", roles: ["reader"] } })), undefined)).toEqual({
      did: "",
      admin: false,
      clientId: "agent-app",
    });
    // Any of the configured issuers.
    const other = await issuer.token({ issuer: "https://other.example.com", claims: { did: BOB } });
    expect((await auth(headers(other), undefined)).did).toBe(BOB);
  });

  it("re-fetches on an unknown kid after the cooldown, so a rotated-in key verifies and a dropped one stops", async () => {
    const start = issuer.fetches;
    const auth = createJwtAuthenticator(options({ jwksCooldownMs: 0 }));
    const oldKey = issuer.currentKey;
    const old = await issuer.token({ claims: { did: ALICE } });
    await auth(headers(old), undefined);
    await auth(headers(old), undefined);
    expect(issuer.fetches - start).toBe(1);
    const newKey = await issuer.rotate();
    expect((await auth(headers(await issuer.token({ claims: { did: BOB } }, newKey)), undefined)).did).toBe(BOB);
    expect(issuer.fetches - start).toBe(2);
    expect(await refusal(auth(headers(await issuer.token({ claims: { did: ALICE } }, oldKey)), undefined))).toMatchObject({
      code: "UNAUTHENTICATED",
      reason: "TOKEN_INVALID",
    });
  });

  it("JWKS unreachable before the first fetch, answering non-200 or no key set, or slower than the timeout is UNAVAILABLE, not UNAUTHENTICATED", async () => {
    const tok = await issuer.token({ claims: { did: ALICE } });
    await issuer.down();
    expect(await refusal(createJwtAuthenticator(options())(headers(tok), undefined))).toMatchObject({
      code: "UNAVAILABLE",
      reason: "JWKS_UNAVAILABLE",
    });
    await issuer.up();
    for (const status of [500, 502, 503, 404]) {
      issuer.failStatus = status;
      expect(await refusal(createJwtAuthenticator(options())(headers(tok), undefined)), String(status)).toMatchObject({
        code: "UNAVAILABLE",
        reason: "JWKS_UNAVAILABLE",
      });
    }
    issuer.failStatus = undefined;
    for (const body of ["<html>login</html>", JSON.stringify({ keys: "none" }), JSON.stringify([])]) {
      issuer.malformedBody = body;
      expect(await refusal(createJwtAuthenticator(options())(headers(tok), undefined)), body).toMatchObject({
        code: "UNAVAILABLE",
        reason: "JWKS_UNAVAILABLE",
      });
    }
    issuer.malformedBody = undefined;
    issuer.delayMs = 2_000;
    const started = performance.now();
    expect(await refusal(createJwtAuthenticator(options({ jwksTimeoutMs: 200 }))(headers(tok), undefined))).toMatchObject({
      code: "UNAVAILABLE",
      reason: "JWKS_UNAVAILABLE",
    });
    expect(performance.now() - started).toBeLessThan(1_500);
  });

  it("a token is refused before any key is fetched when its algorithm is not allowed", async () => {
    const start = issuer.fetches;
    const auth = createJwtAuthenticator(options());
    const payload = issuer.claims({ claims: { did: ALICE } });
    for (const tok of [algNoneToken(payload), hs256WithPublicKey(issuer.currentKey, payload), hs256WithPublicKey(issuer.currentKey, payload, "jwk")]) {
      expect(await refusal(auth(headers(tok), undefined))).toMatchObject({ code: "UNAUTHENTICATED", reason: "TOKEN_INVALID" });
    }
    // A correctly signed RS256 token, when only ES256 is allowed.
    const esOnly = createJwtAuthenticator(options({ algorithms: ["ES256"] }));
    expect(await refusal(esOnly(headers(await issuer.token({ claims: { did: ALICE } })), undefined))).toMatchObject({
      code: "UNAUTHENTICATED",
      reason: "TOKEN_INVALID",
    });
    expect(issuer.fetches - start).toBe(0);
  });
});
