/**
 * Zero plaintext secrets at rest or in transit to anyone but their owner:
 * after a full scenario with the real drivers (Keycloak registrar, GSAP over
 * HTTP with its bearer token, Chronicle audit) against the loopback fakes —
 * creates over three transports, a nested delegation, idempotent replays,
 * commands, revocations, a cascade, an expiry, a command limit, upstream
 * faults with compensation, audit retries — no secret appears in any log
 * line (level trace), any row of any table (nor anywhere in the SQLite
 * files, free pages included), any event (table or Watch), any Chronicle
 * request (headers and body), any GSAP request body, any error returned to
 * a client, any answer but the first CreateDelegation's, or /healthz.
 *
 * The secrets: every agent client secret the broker ever read from Keycloak
 * (those it returned, and those of identities it created and compensated),
 * every admin access token (bearer JWTs) Keycloak issued to it, the Keycloak
 * admin client secret and the GSAP bearer token; each also base64-, base64url-,
 * URL- and JSON-encoded. Inbound bearer JWTs (AUTH_MODE=jwt) are scanned for
 * in test/auth/jwt.test.ts.
 */
import { readFileSync, readdirSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { toJsonString } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema, WatchDelegationsResponseSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { createLogger } from "../../src/logging.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { errorDetailOf } from "../helpers/grpc-client.js";
import { GSAP_TOKEN, type World, startWorld } from "../helpers/real-world.js";
import { collect } from "../helpers/watch.js";

/** A text to scan and where it came from. */
interface Haystack {
  where: string;
  text: string;
}

interface Secret {
  name: string;
  value: string;
}

/** The spellings a secret could take on its way into a log, a header or a payload. */
function spellings(s: Secret): Secret[] {
  const forms = new Map<string, string>([
    ["", s.value],
    [" (base64)", Buffer.from(s.value).toString("base64")],
    [" (base64url)", Buffer.from(s.value).toString("base64url")],
    [" (URL-encoded)", encodeURIComponent(s.value)],
    [" (JSON-escaped)", JSON.stringify(s.value).slice(1, -1)],
  ]);
  // A JWT's signature alone is as unique as the token (a truncated token still leaks it).
  const parts = s.value.split(".");
  if (parts.length === 3 && parts[2]!.length >= 32) forms.set(" (JWT signature)", parts[2]!);
  const seen = new Set<string>();
  const out: Secret[] = [];
  for (const [suffix, value] of forms) {
    // Base64 of a secret may hide in a longer base64 string at another offset: also match its stable core.
    if (seen.has(value)) continue;
    seen.add(value);
    out.push({ name: s.name + suffix, value });
  }
  return out;
}

/** Every (secret, place) pair where a spelling of the secret occurs. */
function scan(haystacks: Haystack[], secrets: Secret[]): string[] {
  const hits: string[] = [];
  const needles = secrets.flatMap(spellings);
  for (const h of haystacks) {
    for (const n of needles) if (h.text.includes(n.value)) hits.push(`${n.name} in ${h.where}: …${around(h.text, n.value)}…`);
  }
  return hits;
}

function around(text: string, needle: string): string {
  const at = text.indexOf(needle);
  return text.slice(Math.max(0, at - 60), at + needle.length + 20).replace(needle, "<SECRET>");
}

/**
 * A pass-through HTTP proxy in front of the Keycloak fake that keeps every
 * answer body, so the scan knows every secret the broker was ever handed
 * (including those of identities compensated before any client saw them).
 */
async function recordingProxy(target: string): Promise<{ url: string; bodies: string[]; close(): Promise<void> }> {
  const upstream = new URL(target);
  const bodies: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const up = http.request(
        { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers, agent: false },
        (ur) => {
          const out: Buffer[] = [];
          ur.on("data", (c: Buffer) => out.push(c));
          ur.on("end", () => {
            const body = Buffer.concat(out);
            bodies.push(body.toString("utf8"));
            res.writeHead(ur.statusCode ?? 502, ur.headers);
            res.end(body);
          });
        },
      );
      // The fake dropped the connection (a fault): drop ours too.
      up.on("error", () => req.socket.destroy());
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bodies,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Every string under a key named like a credential, at any depth of a JSON text. */
function credentialsIn(jsonText: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(jsonText);
  } catch {
    return [];
  }
  const out: string[] = [];
  const walk = (v: unknown, key: string) => {
    if (typeof v === "string") {
      if (/secret|token|^value$/i.test(key) && v.length >= 8) out.push(v);
    } else if (Array.isArray(v)) for (const x of v) walk(x, key);
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(parsed, "");
  return out;
}

describe("secrets scan after a full scenario with the real drivers", () => {
  let world: World;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let t: TestBroker;
  let skewMs = 0;
  const logLines: string[] = [];
  /** Secrets CreateDelegation returned, one per successful first create. */
  const returned: string[] = [];
  /** Everything clients received, except the first CreateDelegation answers. */
  const answers: Haystack[] = [];
  /** Every error a client received: message, ErrorDetail, metadata. */
  const errors: Haystack[] = [];
  const codes = new Map<string, number>();

  const note = (what: string, code: number) => codes.set(`${what}:${Code[code] ?? code}`, (codes.get(`${what}:${Code[code] ?? code}`) ?? 0) + 1);

  /** Runs a call that is expected to fail and keeps what the client saw. */
  async function failing(what: string, call: Promise<unknown>): Promise<number> {
    try {
      const res = await call;
      answers.push({ where: `answer to ${what}`, text: JSON.stringify(res, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)) });
      note(what, 0);
      return 0;
    } catch (err) {
      const e = err as { code?: number; details?: string; metadata?: { getMap(): object } };
      if (err instanceof ConnectError) {
        const details = err.findDetails(ErrorDetailSchema).map((d) => toJsonString(ErrorDetailSchema, d));
        errors.push({ where: `error of ${what}`, text: [err.rawMessage, ...details, JSON.stringify([...err.metadata])].join("\n") });
        note(what, err.code);
        return err.code;
      }
      const detail = errorDetailOf(err);
      errors.push({
        where: `error of ${what}`,
        text: [e.details, detail ? toJsonString(ErrorDetailSchema, detail) : "", JSON.stringify(e.metadata?.getMap() ?? {})].join("\n"),
      });
      note(what, e.code ?? -1);
      return e.code ?? -1;
    }
  }

  const keep = <T>(what: string, res: T): T => {
    answers.push({ where: `answer to ${what}`, text: JSON.stringify(res, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)) });
    return res;
  };

  beforeAll(async () => {
    world = await startWorld();
    world.gsap.faultMethod = "POST"; // GSAP faults hit the delegated-context request
    world.delegatorContext("ac-alice", ALICE, "CAP_MUTATE");
    world.delegatorContext("ac-bob", BOB, "CAP_MUTATE");
    proxy = await recordingProxy(world.keycloak.url);
    const destination = { write: (line: string) => void logLines.push(line) };
    t = await startTestBroker({
      env: { ...world.env, KEYCLOAK_URL: proxy.url, AUTH_MODE: "dev", MAX_DELEGATION_DEPTH: "2" },
      overrides: { log: createLogger({ level: "trace", destination }), clock: () => Date.now() + skewMs },
    });
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    await proxy?.close();
    await world?.close();
  });

  it("finds no secret in logs, database, events, Chronicle, GSAP, errors or answers", { timeout: 60_000 }, async () => {
    // ---- creates, over each transport, with replays -----------------------------------------
    const first = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice", agentModel: "opus", requestId: "create-1" }, as(ALICE));
    returned.push(first.agentCredential!.clientSecret);
    const replay = keep("replayed create", await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice", agentModel: "opus", requestId: "create-1" }, as(ALICE)));
    expect(replay.agentCredential!.clientSecret).toBe("");
    const viaConnect = await t.connect.createDelegation(
      { delegatorAcId: "ac-alice", scope: { prohibitedCommands: ["rm -rf"], ceremonyRequiredFor: ["deploy"], maxCommands: 2 } },
      { headers: as(ALICE) },
    );
    returned.push(viaConnect.agentCredential!.clientSecret);
    const viaGrpcWeb = await t.grpcWeb.createDelegation({ delegatorAcId: "ac-bob", requestId: "bob-1" }, { headers: as(BOB) });
    returned.push(viaGrpcWeb.agentCredential!.clientSecret);
    keep("replayed create (gRPC-Web)", await t.grpcWeb.createDelegation({ delegatorAcId: "ac-bob", requestId: "bob-1" }, { headers: as(BOB) }));
    // From the first delegation's own context: a nested delegation, ended by the cascade below.
    const nested = await t.grpc.unary("createDelegation", { delegatorAcId: first.delegatedAc!.contextId }, as(ALICE));
    returned.push(nested.agentCredential!.clientSecret);
    const shortLived = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice", scope: { ttl: durationFromMs(60_000) } }, as(ALICE));
    returned.push(shortLived.agentCredential!.clientSecret);

    // ---- upstream faults: identities created, then compensated ------------------------------
    world.gsap.failNext(1, 500);
    expect(await failing("create, GSAP 500", t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE)))).toBe(Code.Unavailable);
    world.gsap.malformNext("not-json");
    expect(await failing("create, GSAP not JSON", t.connect.createDelegation({ delegatorAcId: "ac-alice" }, { headers: as(ALICE) }))).toBe(Code.Unavailable);
    world.keycloak.failNext("create", 500);
    expect(await failing("create, Keycloak 500", t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE)))).toBe(Code.Unavailable);
    world.keycloak.failNext("getSecret", 503, { times: 3 });
    await failing("create, Keycloak secret 503", t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE)));
    world.keycloak.expireTokens(); // the broker must fetch a new admin token, with its secret
    const afterRefresh = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-bob" }, as(BOB));
    returned.push(afterRefresh.agentCredential!.clientSecret);
    world.chronicle.failNext(3, 500); // the outbox retries

    // ---- commands ---------------------------------------------------------------------------
    const limited = viaConnect.delegation!.delegationId;
    for (const command of ["ls -la", "rm -rf /tmp/x", "deploy prod", "cat notes", "git status"]) {
      keep(`authorize ${command}`, await t.grpc.unary("authorizeCommand", { delegationId: limited, command }, as(ALICE)));
    }
    keep("authorize (Connect)", await t.connect.authorizeCommand({ delegationId: afterRefresh.delegation!.delegationId, command: "ls" }, { headers: as(BOB) }));

    // ---- ends: revoke with replay, cascade, delegator context, expiry --------------------------
    keep("revoke", await t.grpc.unary("revokeDelegation", { delegationId: first.delegation!.delegationId, requestId: "rev-1" }, as(ALICE)));
    keep("replayed revoke", await t.grpc.unary("revokeDelegation", { delegationId: first.delegation!.delegationId, requestId: "rev-1" }, as(ALICE)));
    keep("revoke delegator context", await t.connect.revokeDelegatorContext({ delegatorAcId: "ac-bob", reason: "gsap_revoked" }));
    skewMs = 61_000;
    expect((await t.broker.background.expiry.runOnce()).done).toBeGreaterThanOrEqual(1);
    skewMs = 0;

    // ---- errors clients get ------------------------------------------------------------------
    await failing("get, someone else's", t.grpc.unary("getDelegation", { delegationId: afterRefresh.delegation!.delegationId }, as(ALICE)));
    await failing("get, malformed id", t.connect.getDelegation({ delegationId: "nope" }, { headers: as(ALICE) }));
    await failing("revoke, ended", t.grpc.unary("revokeDelegation", { delegationId: first.delegation!.delegationId }, as(ALICE)));
    await failing("create, request_id reused", t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice", agentModel: "other", requestId: "create-1" }, as(ALICE)));
    await failing("create, ceiling too high", t.grpcWeb.createDelegation({ delegatorAcId: "ac-alice", scope: { capabilityCeiling: "CAP_ADMIN" } }, { headers: as(ALICE) }));
    await failing("authorize, ended", t.grpc.unary("authorizeCommand", { delegationId: nested.delegation!.delegationId, command: "ls" }, as(ALICE)));
    await failing("create, bad identity", t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as("nope")));

    // ---- background work: identity cleanup, orphan sweep, audit delivery ------------------------
    await t.settle();
    await t.broker.background.orphanSweep.runOnce();
    for (let i = 0; i < 50 && (await t.broker.store.auditBacklog()).pending > 0; i++) await t.broker.background.outboxLoop.runOnce().catch(() => 0);
    expect((await t.broker.store.auditBacklog()).pending).toBe(0);

    // ---- what the watchers see, from the first revision -------------------------------------------
    const head = await t.broker.store.headRevision();
    const watched = await collect(t.grpc.watch({ startRevision: 1n }), (m) => m.some((x) => x.kind.case === "checkpoint" && x.revision >= head));
    const events = watched.messages.map((m) => toJsonString(WatchDelegationsResponseSchema, m));
    expect(events.filter((e) => e.includes('"event"')).length).toBeGreaterThanOrEqual(15);
    keep("list", await t.grpc.unary("listAgents", { state: 0, pageSize: 500 }));
    for (const state of [1, 2, 3, 4, 5]) keep(`list ${state}`, await t.connect.listAgents({ state, pageSize: 500 }));
    for (const d of [first, viaConnect, viaGrpcWeb, nested, shortLived, afterRefresh]) {
      keep("get", await t.grpc.unary("getDelegation", { delegationId: d.delegation!.delegationId }));
    }
    const health = await (await fetch(`http://127.0.0.1:${t.broker.webPort}/healthz`)).text();

    // ---- the secrets -------------------------------------------------------------------------------
    expect(returned.every((s) => s.length >= 16)).toBe(true);
    const fromKeycloak = [...new Set(proxy.bodies.flatMap(credentialsIn))];
    // Every returned secret came from Keycloak; so did at least two of identities compensated before use.
    for (const s of returned) expect(fromKeycloak).toContain(s);
    const compensated = fromKeycloak.filter((s) => !returned.includes(s) && !world.keycloak.accessTokens().includes(s));
    expect(compensated.length).toBeGreaterThanOrEqual(2);
    const accessTokens = world.keycloak.accessTokens();
    expect(accessTokens.length).toBeGreaterThanOrEqual(2); // the first and the refreshed one
    const secrets: Secret[] = [
      ...returned.map((value, i) => ({ name: `returned agent secret #${i + 1}`, value })),
      ...compensated.map((value, i) => ({ name: `agent secret of a compensated identity #${i + 1}`, value })),
      ...accessTokens.map((value, i) => ({ name: `Keycloak admin access token #${i + 1}`, value })),
      { name: "Keycloak admin client secret", value: world.keycloak.adminClientSecret },
      { name: "GSAP bearer token", value: GSAP_TOKEN },
    ];

    // ---- the places ----------------------------------------------------------------------------------
    const dbPath = t.db.url.slice("file:".length);
    const db = new Database(dbPath, { readonly: true, fileMustExist: true });
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[];
    const rows: Haystack[] = [];
    for (const { name } of tables) {
      const all = db.prepare(`SELECT * FROM "${name.replaceAll('"', '""')}"`).all() as Record<string, unknown>[];
      all.forEach((row, i) =>
        rows.push({
          where: `table ${name} row ${i}`,
          text: JSON.stringify(row, (_k, v: unknown) => (Buffer.isBuffer(v) ? `${v.toString("utf8")} ${v.toString("hex")}` : typeof v === "bigint" ? String(v) : v)),
        }),
      );
    }
    db.close();
    expect(tables.map((x) => x.name)).toEqual(expect.arrayContaining(["delegations"]));
    expect(rows.length).toBeGreaterThan(20);
    // The files themselves, WAL and free pages included: a secret written once and deleted stays there.
    const files: Haystack[] = readdirSync(dirname(dbPath)).map((f) => ({ where: `file ${f}`, text: readFileSync(join(dirname(dbPath), f)).toString("latin1") }));

    const chronicle: Haystack[] = world.chronicle.attempts.map((a, i) => ({ where: `Chronicle request ${i} (${a.path})`, text: `${JSON.stringify(a.headers)}\n${a.text}` }));
    expect(world.chronicle.received().length).toBeGreaterThanOrEqual(15);
    // GSAP legitimately receives its own bearer token in Authorization; everything else it got must be clean.
    const gsap: Haystack[] = world.gsap.requests.map((r, i) => ({
      where: `GSAP request ${i} (${r.method} ${r.path})`,
      text: `${JSON.stringify({ ...r.headers, authorization: undefined })}\n${r.text}`,
    }));
    const logs: Haystack[] = logLines.map((text, i) => ({ where: `log line ${i}`, text }));
    expect(logLines.length).toBeGreaterThan(50);

    const haystacks = [
      ...logs,
      ...rows,
      ...files,
      ...events.map((text, i) => ({ where: `watch message ${i}`, text })),
      ...chronicle,
      ...gsap,
      ...errors,
      ...answers,
      { where: "/healthz", text: health },
    ];
    // The scenario reached the paths it claims to.
    expect(errors.length).toBeGreaterThanOrEqual(10);
    console.info(
      `scanned ${logs.length} log lines, ${rows.length} rows of ${tables.length} tables, ${files.length} database files, ${events.length} watch messages, ` +
        `${chronicle.length} Chronicle requests, ${gsap.length} GSAP requests, ${errors.length} errors, ${answers.length} answers ` +
        `for ${secrets.length} secrets in ${secrets.flatMap(spellings).length} spellings`,
    );

    // ---- the scan can fail: a secret planted in a copy of a real line is found, in each spelling -----------
    const line = logLines.find((l) => l.includes('"msg":"delegation created"'))!;
    for (const planted of spellings({ name: "planted", value: returned[0]! })) {
      const copy = line.replace('"msg":"delegation created"', `"msg":"delegation created","x":"${planted.value}"`);
      const found = scan([{ where: "planted line", text: copy }], [{ name: "returned agent secret #1", value: returned[0]! }]);
      expect(found.length, planted.name).toBeGreaterThanOrEqual(1);
    }
    // A request logged with its headers under a key the redaction list does not know.
    const tokenLine = line.replace('"msg"', `"req":{"headers":{"Authorization":"Bearer ${accessTokens[0]!}"}},"msg"`);
    expect(scan([{ where: "planted line", text: tokenLine }], [{ name: "token", value: accessTokens[0]! }]).length).toBeGreaterThanOrEqual(1);

    expect(scan(haystacks, secrets)).toEqual([]);
  });
});
