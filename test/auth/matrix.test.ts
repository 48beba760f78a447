/**
 * Who may do what, tried by everyone on everything: a matrix of principals
 * (delegators A and B, the agent of one of A's delegations, the admin role,
 * and eight callers that must not get in) × every RPC × target (a delegation
 * of A's that is the agent's, another of A's, one of B's, one that does not
 * exist), through the real listeners in AUTH_MODE=jwt, over grpc-js and over
 * the Connect protocol. The GSAP HTTP driver talks to a loopback GSAP, so a
 * context that does not exist is refused the way production refuses it.
 *
 * The table EXPECTED says what each cell must answer. Beyond matching it:
 * no call may succeed where it is denied, nor show or touch a delegation the
 * caller may not act on ("unauthorized successes", counted, must be 0); and
 * every denied target must be answered exactly like the one that does not
 * exist (same code, reason, message and metadata, modulo the id).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { WatchDelegationsResponse } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { CommandDecision, ErrorDetailSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { GsapFake } from "../fakes/gsap-fake.js";
import { JwksFake, algNoneToken, createSigningKey, hs256WithPublicKey, mintToken } from "../fakes/jwks-fake.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { errorDetailOf } from "../helpers/grpc-client.js";
import { collect } from "../helpers/watch.js";

const ADMIN_ROLE = "llm-broker-admin";
const GSAP_TOKEN = "gsap-bearer-token-for-the-matrix-0123456789";
const MISSING_ID = "del_01AAAAAAAAAAAAAAAAAAAAAAAA";
const NOBODY = "did:web:example.com/user/nobody";

// ---- the matrix's axes ------------------------------------------------------

const OPS = [
  "CreateDelegation",
  "RevokeDelegation",
  "GetDelegation",
  "ListAgents",
  "WatchDelegations(delegation_id)",
  "WatchDelegations(delegator_did)",
  "RevokeDelegatorContext",
  "AuthorizeCommand",
] as const;
type Op = (typeof OPS)[number];
/** Operations that end delegations: each principal's row gets a world of its own. */
const DESTRUCTIVE: ReadonlySet<Op> = new Set(["RevokeDelegation", "RevokeDelegatorContext"]);

/** A1: A's, and the agent's own; A2: another of A's; B1: B's; missing: no such delegation. */
const TARGETS = ["A1", "A2", "B1", "missing"] as const;
type Target = (typeof TARGETS)[number];

type Kind = "delegator" | "agent" | "admin" | "rejected";
/** How a target relates to the caller; `any` is the admin's relation to every delegation. */
type Relation = "own" | "foreign" | "any" | "missing";

interface Denied {
  code: Code;
  reason: string;
}
/** ok: answered with the target; empty: answered, with nothing in it; else denied with this code and reason. */
type Expect = "ok" | "empty" | Denied;

const deny = (code: Code, reason: string): Denied => ({ code, reason });
const NOT_FOUND = deny(Code.NotFound, "DELEGATION_NOT_FOUND");
const CONTEXT_NOT_ACTIVE = deny(Code.FailedPrecondition, "DELEGATOR_CONTEXT_NOT_ACTIVE");
const ADMIN_ONLY = deny(Code.PermissionDenied, "ADMIN_ONLY");
const DELEGATOR_ONLY = deny(Code.PermissionDenied, "DELEGATOR_ONLY");
const AGENT_CANNOT_DELEGATE = deny(Code.PermissionDenied, "AGENT_CANNOT_DELEGATE");
const DELEGATOR_DID_REQUIRED = deny(Code.PermissionDenied, "DELEGATOR_DID_REQUIRED");

/**
 * What each cell must answer (README "Authorization"). Create delegates on
 * from the target's delegated access context (MAX_DELEGATION_DEPTH=2); the
 * missing target's context is one GSAP never issued.
 */
const EXPECTED: Record<Exclude<Kind, "rejected">, Record<Op, Partial<Record<Relation, Expect>>>> = {
  delegator: {
    CreateDelegation: { own: "ok", foreign: CONTEXT_NOT_ACTIVE, missing: CONTEXT_NOT_ACTIVE },
    RevokeDelegation: { own: "ok", foreign: NOT_FOUND, missing: NOT_FOUND },
    GetDelegation: { own: "ok", foreign: NOT_FOUND, missing: NOT_FOUND },
    ListAgents: { own: "ok", foreign: "empty", missing: "empty" },
    "WatchDelegations(delegation_id)": { own: "ok", foreign: NOT_FOUND, missing: NOT_FOUND },
    "WatchDelegations(delegator_did)": { own: "ok", foreign: "empty", missing: "empty" },
    RevokeDelegatorContext: { own: ADMIN_ONLY, foreign: ADMIN_ONLY, missing: ADMIN_ONLY },
    AuthorizeCommand: { own: "ok", foreign: NOT_FOUND, missing: NOT_FOUND },
  },
  // The agent's own client credential: reads and asks about its own delegation, nothing more.
  agent: {
    CreateDelegation: { own: AGENT_CANNOT_DELEGATE, foreign: AGENT_CANNOT_DELEGATE, missing: AGENT_CANNOT_DELEGATE },
    RevokeDelegation: { own: NOT_FOUND, foreign: NOT_FOUND, missing: NOT_FOUND },
    GetDelegation: { own: "ok", foreign: NOT_FOUND, missing: NOT_FOUND },
    ListAgents: { own: DELEGATOR_ONLY, foreign: DELEGATOR_ONLY, missing: DELEGATOR_ONLY },
    "WatchDelegations(delegation_id)": { own: "ok", foreign: NOT_FOUND, missing: NOT_FOUND },
    "WatchDelegations(delegator_did)": { own: DELEGATOR_ONLY, foreign: DELEGATOR_ONLY, missing: DELEGATOR_ONLY },
    RevokeDelegatorContext: { own: ADMIN_ONLY, foreign: ADMIN_ONLY, missing: ADMIN_ONLY },
    AuthorizeCommand: { own: "ok", foreign: NOT_FOUND, missing: NOT_FOUND },
  },
  // The GSAP broker's service account: acts on all; it has no DID, so it cannot itself delegate.
  admin: {
    CreateDelegation: { any: DELEGATOR_DID_REQUIRED, missing: DELEGATOR_DID_REQUIRED },
    RevokeDelegation: { any: "ok", missing: NOT_FOUND },
    GetDelegation: { any: "ok", missing: NOT_FOUND },
    ListAgents: { any: "ok", missing: "empty" },
    "WatchDelegations(delegation_id)": { any: "ok", missing: NOT_FOUND },
    "WatchDelegations(delegator_did)": { any: "ok", missing: "empty" },
    RevokeDelegatorContext: { any: "ok", missing: "empty" },
    AuthorizeCommand: { any: "ok", missing: NOT_FOUND },
  },
};

// ---- the world: delegations to aim at ---------------------------------------

interface DelegationRef {
  id: string;
  delegatorDid: string;
  agentClientId: string;
  delegatedAcId: string;
  /** The delegator context it was made from (one per delegation, so revoking one ends only it). */
  rootAcId: string;
}

interface World {
  n: number;
  /** The revision just before its delegations were created (Watch replays from it). */
  startRevision: bigint;
  A1: DelegationRef;
  A2: DelegationRef;
  B1: DelegationRef;
}

/** What an operation is given for a target. */
interface Aim {
  id: string;
  delegatorDid: string;
  delegatedAcId: string;
  rootAcId: string;
}

function aim(world: World, target: Target): Aim {
  if (target === "missing") return { id: MISSING_ID, delegatorDid: NOBODY, delegatedAcId: "ac-never-issued", rootAcId: "ac-never-issued" };
  const d = world[target];
  return { id: d.id, delegatorDid: d.delegatorDid, delegatedAcId: d.delegatedAcId, rootAcId: d.rootAcId };
}

// ---- the principals ----------------------------------------------------------

interface Caller {
  name: string;
  kind: Kind;
  /** The DID the caller is (delegators). */
  did?: string;
  /** For rejected callers: the reason the broker must give. */
  reason?: string;
  headers(world: World): Promise<Record<string, string>>;
}

function relation(caller: Caller, target: Target): Relation {
  if (target === "missing") return "missing";
  if (caller.kind === "admin") return "any";
  if (caller.kind === "agent") return target === "A1" ? "own" : "foreign";
  const did = caller.did ?? ALICE; // rejected callers' tokens all claim to be A
  return (target === "B1") === (did === BOB) ? "own" : "foreign";
}

function expectedFor(caller: Caller, op: Op, target: Target): Expect {
  if (caller.kind === "rejected") return deny(Code.Unauthenticated, caller.reason!);
  const e = EXPECTED[caller.kind][op][relation(caller, target)];
  if (e === undefined) throw new Error(`no expectation for ${caller.name} / ${op} / ${target}`);
  return e;
}

/** Whether `caller` may see or act on `d` at all. */
function sees(caller: Caller, world: World, d: { id: string; delegatorDid: string }): boolean {
  switch (caller.kind) {
    case "admin":
      return true;
    case "delegator":
      return d.delegatorDid === caller.did;
    case "agent":
      return d.id === world.A1.id;
    case "rejected":
      return false;
  }
}

// ---- calling, over either transport ------------------------------------------

type UnaryMethod = "createDelegation" | "revokeDelegation" | "getDelegation" | "listAgents" | "revokeDelegatorContext" | "authorizeCommand";

interface WatchRequest {
  startRevision: bigint;
  delegationId?: string;
  delegatorDid?: string;
}

interface Transport {
  name: string;
  unary(method: UnaryMethod, request: object, headers: Record<string, string>): Promise<any>;
  /** Messages until caught up with `head` (a checkpoint at or past it), or the stream's end. Throws its error. */
  watch(request: WatchRequest, headers: Record<string, string>, head: bigint): Promise<WatchDelegationsResponse[]>;
}

type Outcome =
  | { ok: true; empty: boolean; touched: { id: string; delegatorDid: string }[]; note: string }
  | { ok: false; code: number; reason: string; message: string; metadata: Record<string, string> };

function failureOf(err: unknown): Outcome {
  if (err instanceof ConnectError) {
    const detail = err.findDetails(ErrorDetailSchema)[0];
    return { ok: false, code: err.code, reason: detail?.reason ?? "", message: err.rawMessage, metadata: { ...detail?.metadata } };
  }
  const e = err as { code?: number; details?: string };
  if (typeof e?.code !== "number") throw err;
  const detail = errorDetailOf(err);
  return { ok: false, code: e.code, reason: detail?.reason ?? "", message: e.details ?? "", metadata: { ...detail?.metadata } };
}

const caughtUp = (head: bigint) => (m: WatchDelegationsResponse) => m.kind.case === "checkpoint" && m.revision >= head;

// ---- the run ------------------------------------------------------------------

describe("authorization matrix (AUTH_MODE=jwt)", () => {
  let issuer: JwksFake;
  let gsap: GsapFake;
  let t: TestBroker;
  let shared: World;
  let worlds = 0;
  let callers: Caller[];
  let transports: Transport[];

  const tally = {
    cells: 0,
    allowed: 0,
    empty: 0,
    denials: 0,
    mismatches: 0,
    unauthorizedSuccesses: 0,
    unauthorizedSideEffects: 0,
    comparisons: 0,
    foreignVsMissingDifferences: 0,
    okCreates: 0,
    byTransport: {} as Record<string, number>,
  };

  async function token(claims: Record<string, unknown>): Promise<string> {
    return issuer.token({ claims, expiresIn: 3600 });
  }

  async function createWorld(): Promise<World> {
    const n = ++worlds;
    const startRevision = await t.broker.store.headRevision();
    const make = async (who: string, did: string, i: number): Promise<DelegationRef> => {
      const rootAcId = `ac-${who}-${n}-${i}`;
      gsap.setContext({ contextId: rootAcId, status: "authorized", principalDid: did, capabilityCeiling: "CAP_MUTATE", expiresAt: new Date(Date.now() + 7200_000).toISOString() });
      const res = await t.grpc.unary("createDelegation", { delegatorAcId: rootAcId }, { authorization: `Bearer ${await token({ did, azp: "gsap-ui" })}` });
      const d = res.delegation!;
      return { id: d.delegationId, delegatorDid: d.delegatorDid, agentClientId: d.agentClientId, delegatedAcId: d.delegatedAcId, rootAcId };
    };
    return { n, startRevision, A1: await make("alice", ALICE, 1), A2: await make("alice", ALICE, 2), B1: await make("bob", BOB, 1) };
  }

  beforeAll(async () => {
    issuer = await JwksFake.start();
    gsap = await GsapFake.start({ bearerToken: GSAP_TOKEN });
    t = await startTestBroker({
      env: {
        ...issuer.env(),
        GSAP_DRIVER: "http",
        GSAP_BROKER_URL: gsap.url,
        GSAP_BEARER_TOKEN: GSAP_TOKEN,
        MAX_DELEGATION_DEPTH: "2",
        WATCH_CHECKPOINT_SECONDS: "1",
        ALLOW_DEV_DRIVERS: "true", // stub registrar, log audit
      },
    });
    // Watch replays from a revision after 0 (0 means "from now on"): make the log start before the first world.
    gsap.setContext({ contextId: "ac-warm-up", status: "authorized", principalDid: BOB, capabilityCeiling: "CAP_MUTATE" });
    await t.grpc.unary("createDelegation", { delegatorAcId: "ac-warm-up" }, { authorization: `Bearer ${await token({ did: BOB })}` });
    shared = await createWorld();

    const bearer = (tok: string) => ({ authorization: `Bearer ${tok}` });
    // Forged and foreign tokens claim as much as possible: A's DID, the admin role and the agent's client.
    const mighty = (w: World) => ({ sub: "alice", did: ALICE, roles: [ADMIN_ROLE], azp: w.A1.agentClientId });
    const handBuilt = (w: World) => issuer.claims({ expiresIn: 3600, claims: mighty(w) });
    const stranger = await createSigningKey("RS256");
    const impostor = await createSigningKey("RS256", issuer.currentKey.kid);
    callers = [
      { name: "delegator A", kind: "delegator", did: ALICE, headers: async () => bearer(await token({ sub: "alice", did: ALICE, azp: "gsap-ui" })) },
      { name: "delegator B", kind: "delegator", did: BOB, headers: async () => bearer(await token({ sub: "bob", did: BOB, azp: "gsap-ui" })) },
      { name: "agent of A1", kind: "agent", headers: async (w) => bearer(await token({ sub: "service-account-agent", azp: w.A1.agentClientId })) },
      { name: "admin", kind: "admin", headers: async () => bearer(await token({ sub: "gsap-broker", azp: "gsap-broker", roles: [ADMIN_ROLE] })) },
      { name: "anonymous", kind: "rejected", reason: "TOKEN_MISSING", headers: async () => ({}) },
      { name: "x-delegator-did header only", kind: "rejected", reason: "TOKEN_MISSING", headers: async () => as(ALICE) },
      { name: "expired token", kind: "rejected", reason: "TOKEN_EXPIRED", headers: async (w) => bearer(await issuer.token({ expiresIn: -3600, claims: mighty(w) })) },
      { name: "wrong audience", kind: "rejected", reason: "TOKEN_INVALID", headers: async (w) => bearer(await issuer.token({ audience: "account", claims: mighty(w) })) },
      { name: "wrong issuer", kind: "rejected", reason: "TOKEN_INVALID", headers: async (w) => bearer(await issuer.token({ issuer: "https://idp.example.com/realms/other", claims: mighty(w) })) },
      { name: "alg none", kind: "rejected", reason: "TOKEN_INVALID", headers: async (w) => bearer(algNoneToken(handBuilt(w))) },
      { name: "HS256 with the public key", kind: "rejected", reason: "TOKEN_INVALID", headers: async (w) => bearer(hs256WithPublicKey(issuer.currentKey, handBuilt(w))) },
      { name: "unknown key (unknown kid)", kind: "rejected", reason: "TOKEN_INVALID", headers: async (w) => bearer(await mintToken(stranger, issuer, { claims: mighty(w) })) },
      { name: "unknown key (published kid)", kind: "rejected", reason: "TOKEN_INVALID", headers: async (w) => bearer(await mintToken(impostor, issuer, { claims: mighty(w) })) },
    ];

    transports = [
      {
        name: "grpc-js",
        unary: (method, request, headers) => t.grpc.unary(method, request as never, headers),
        watch: async (request, headers, head) => {
          const got = await collect(t.grpc.watch(request, headers), (ms) => ms.some(caughtUp(head)), 10_000);
          if (got.error) throw got.error;
          return got.messages;
        },
      },
      {
        name: "connect",
        unary: (method, request, headers) => (t.connect[method] as (r: object, o: object) => Promise<unknown>)(request, { headers }),
        watch: async (request, headers, head) => {
          const ac = new AbortController();
          const timer = setTimeout(() => ac.abort(), 10_000);
          const got: WatchDelegationsResponse[] = [];
          try {
            for await (const m of t.connect.watchDelegations(request, { headers, signal: ac.signal })) {
              got.push(m);
              if (caughtUp(head)(m)) break;
            }
          } finally {
            clearTimeout(timer);
            ac.abort();
          }
          return got;
        },
      },
    ];
  });

  afterAll(async () => {
    await t?.close();
    await gsap?.close();
    await issuer?.close();
    // For the lead to quote.
    console.log(
      [
        "authorization matrix:",
        `  principals ${callers?.length ?? 0} (${callers?.map((c) => c.name).join(", ")})`,
        `  RPCs 7, operations ${OPS.length} (WatchDelegations by delegation_id and by delegator_did), targets ${TARGETS.length} (own A1, own/foreign A2, foreign B1, non-existent)`,
        `  transports ${transports?.map((x) => `${x.name}: ${tally.byTransport[x.name] ?? 0} cells`).join(", ")}`,
        `  cells ${tally.cells}: allowed ${tally.allowed}, empty answers ${tally.empty}, denials ${tally.denials}`,
        `  unauthorized successes ${tally.unauthorizedSuccesses}, unauthorized side effects ${tally.unauthorizedSideEffects}, cells not as expected ${tally.mismatches}`,
        `  denied-vs-non-existent comparisons ${tally.comparisons}, differences ${tally.foreignVsMissingDifferences}`,
        `  worlds ${worlds} (3 delegations each), delegations created by allowed CreateDelegation cells ${tally.okCreates}`,
      ].join("\n"),
    );
  });

  /** Runs one cell: `op` by `caller` on `target` of `world`. */
  async function run(tr: Transport, op: Op, caller: Caller, world: World, target: Target): Promise<Outcome> {
    const headers = await caller.headers(world);
    const a = aim(world, target);
    const refs = (ds: { delegationId: string; delegatorDid: string }[]) => ds.map((d) => ({ id: d.delegationId, delegatorDid: d.delegatorDid }));
    const fromEvents = (ms: WatchDelegationsResponse[]) =>
      ms.flatMap((m) => (m.kind.case === "event" ? refs([m.kind.value.delegation!]) : []));
    try {
      switch (op) {
        case "CreateDelegation": {
          const r = await tr.unary("createDelegation", { delegatorAcId: a.delegatedAcId }, headers);
          const child = r.delegation;
          return { ok: true, empty: false, touched: [{ id: a.id, delegatorDid: a.delegatorDid }, ...refs([child])], note: `created ${child.delegationId} (depth ${child.depth})` };
        }
        case "RevokeDelegation": {
          const r = await tr.unary("revokeDelegation", { delegationId: a.id }, headers);
          return { ok: true, empty: false, touched: refs([r.delegation]), note: "revoked" };
        }
        case "GetDelegation": {
          const r = await tr.unary("getDelegation", { delegationId: a.id }, headers);
          return { ok: true, empty: false, touched: refs([r.delegation]), note: "" };
        }
        case "ListAgents": {
          const r = await tr.unary("listAgents", { delegatorDid: a.delegatorDid, pageSize: 500 }, headers);
          return { ok: true, empty: r.delegations.length === 0 && r.totalSize === 0, touched: refs(r.delegations), note: `${r.totalSize} listed` };
        }
        case "WatchDelegations(delegation_id)":
        case "WatchDelegations(delegator_did)": {
          const request = op === "WatchDelegations(delegation_id)" ? { delegationId: a.id } : { delegatorDid: a.delegatorDid };
          const head = await t.broker.store.headRevision();
          const ms = await tr.watch({ startRevision: world.startRevision, ...request }, headers, head);
          const touched = fromEvents(ms);
          return { ok: true, empty: touched.length === 0, touched, note: `${touched.length} events` };
        }
        case "RevokeDelegatorContext": {
          const r = await tr.unary("revokeDelegatorContext", { delegatorAcId: a.rootAcId }, headers);
          const ids: string[] = r.revokedDelegationIds;
          const touched = await Promise.all(ids.map(async (id) => ({ id, delegatorDid: (await t.broker.store.get(id))?.delegatorDid ?? "" })));
          return { ok: true, empty: ids.length === 0, touched, note: `revoked ${ids.length}` };
        }
        case "AuthorizeCommand": {
          const r = await tr.unary("authorizeCommand", { delegationId: a.id, command: "ls -la" }, headers);
          const allowed = r.decision === CommandDecision.ALLOW;
          return { ok: true, empty: false, touched: [{ id: a.id, delegatorDid: a.delegatorDid }], note: allowed ? "ALLOW" : `decision ${r.decision} ${r.reason}` };
        }
      }
    } catch (err) {
      return failureOf(err);
    }
  }

  /** Whether `o` is what `e` says, for a cell aimed at `target`. */
  function matches(e: Expect, o: Outcome, a: Aim, op: Op): boolean {
    if (e === "ok") {
      if (!o.ok || o.empty) return false;
      if (op === "AuthorizeCommand" && o.note !== "ALLOW") return false;
      return o.touched.some((d) => d.id === a.id);
    }
    if (e === "empty") return o.ok && o.empty;
    return !o.ok && o.code === e.code && o.reason === e.reason;
  }

  /** The answer with the target's id and DID taken out, for comparing answers about different targets. */
  function normalized(o: Outcome, a: Aim): string {
    const scrub = (s: string) => s.replaceAll(a.id, "<id>").replaceAll(a.delegatorDid, "<did>").replaceAll(a.delegatedAcId, "<ac>").replaceAll(a.rootAcId, "<ac>");
    if (o.ok) return JSON.stringify({ ok: true, empty: o.empty, count: o.touched.length });
    return JSON.stringify({ code: o.code, reason: o.reason, message: scrub(o.message), metadata: Object.fromEntries(Object.entries(o.metadata).map(([k, v]) => [k, scrub(v)])) });
  }

  describe.each(["grpc-js", "connect"])("over %s", (transportName) => {
    it.each(OPS)("%s: every principal × every target answers as the table says; no unauthorized success; denied answers like non-existent", async (op) => {
      const tr = transports.find((x) => x.name === transportName)!;
      const problems: string[] = [];
      for (const caller of callers) {
        const world = DESTRUCTIVE.has(op) ? await createWorld() : shared;
        const ended = new Set<string>(); // delegations this row was allowed to end
        const answers = new Map<Target, { o: Outcome; a: Aim; e: Expect }>();
        for (const target of TARGETS) {
          const a = aim(world, target);
          const e = expectedFor(caller, op, target);
          const o = await run(tr, op, caller, world, target);
          const cell = `${transportName} | ${op} | ${caller.name} | ${target} (${relation(caller, target)})`;
          answers.set(target, { o, a, e });
          tally.cells++;
          tally.byTransport[transportName] = (tally.byTransport[transportName] ?? 0) + 1;
          if (!o.ok) tally.denials++;
          else if (o.empty) tally.empty++;
          else tally.allowed++;
          if (!matches(e, o, a, op)) {
            tally.mismatches++;
            problems.push(`${cell}: expected ${JSON.stringify(e)}, got ${JSON.stringify(o)}`);
          }
          // Success where denied, or anything shown or touched that the caller may not act on.
          if (o.ok && ((!o.empty && e !== "ok") || o.touched.some((d) => !sees(caller, world, d)))) {
            tally.unauthorizedSuccesses++;
            problems.push(`${cell}: UNAUTHORIZED SUCCESS ${JSON.stringify(o)}`);
          }
          if (o.ok && op === "CreateDelegation") tally.okCreates++;
          if (o.ok && e === "ok" && DESTRUCTIVE.has(op)) for (const d of o.touched) if (sees(caller, world, d)) ended.add(d.id);
          if (DESTRUCTIVE.has(op)) {
            // Nothing but what the caller was allowed to end has ended.
            for (const d of [world.A1, world.A2, world.B1]) {
              const now = await t.broker.store.get(d.id);
              if (now?.state !== "ACTIVE" && !ended.has(d.id)) {
                ended.add(d.id); // reported once
                tally.unauthorizedSideEffects++;
                problems.push(`${cell}: ${d.id} is ${now?.state} without an allowed call ending it`);
              }
            }
          }
        }
        // Every denied (or empty) target is answered exactly like the one that does not exist.
        const missing = answers.get("missing")!;
        for (const target of TARGETS) {
          if (target === "missing") continue;
          const { o, a, e } = answers.get(target)!;
          if (e === "ok") continue;
          tally.comparisons++;
          if (normalized(o, a) !== normalized(missing.o, missing.a)) {
            tally.foreignVsMissingDifferences++;
            problems.push(
              `${transportName} | ${op} | ${caller.name}: ${target} answered ${normalized(o, a)} but non-existent answered ${normalized(missing.o, missing.a)}`,
            );
          }
        }
      }
      expect(problems).toEqual([]);
    });
  });

  it("denied calls created nothing: every delegation is the warm-up's, a world's or an allowed CreateDelegation's; none FAILED", async () => {
    let total = 0;
    for (const state of ["REQUESTED", "ACTIVE", "EXPIRED", "REVOKED", "FAILED"] as const) {
      const { total: n } = await t.broker.store.list({ state, limit: 1 });
      if (state === "FAILED" || state === "REQUESTED") expect(n, state).toBe(0);
      total += n;
    }
    expect(total).toBe(1 + worlds * 3 + tally.okCreates);
    expect(tally.unauthorizedSuccesses).toBe(0);
    expect(tally.unauthorizedSideEffects).toBe(0);
    expect(tally.foreignVsMissingDifferences).toBe(0);
  });

  it("an AuthorizeCommand while a delegation is still being created does not lock its agent out", async () => {
    // The agent's client id is set when the delegation becomes ACTIVE; a command policy
    // cached before that (by anyone's call) must not keep the empty one.
    gsap.setContext({ contextId: "ac-slow", status: "authorized", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE" });
    const alice = { authorization: `Bearer ${await token({ did: ALICE, azp: "gsap-ui" })}` };
    gsap.faultMethod = "POST";
    gsap.delayNext(1, 1_000);
    const creating = t.grpc.unary("createDelegation", { delegatorAcId: "ac-slow" }, alice);
    let requested: string | undefined;
    while (requested === undefined) {
      requested = (await t.broker.store.list({ state: "REQUESTED", limit: 1 })).items[0]?.id;
      if (requested === undefined) await new Promise((r) => setTimeout(r, 10));
    }
    const early = await t.grpc.unary("authorizeCommand", { delegationId: requested, command: "ls" }, alice);
    expect(early.decision).toBe(CommandDecision.DENY);
    const created = (await creating).delegation!;
    gsap.faultMethod = undefined;
    expect(created.delegationId).toBe(requested);
    const agent = { authorization: `Bearer ${await token({ azp: created.agentClientId })}` };
    const r = await t.grpc.unary("authorizeCommand", { delegationId: created.delegationId, command: "ls" }, agent);
    expect(r.decision).toBe(CommandDecision.ALLOW);
  });
});
