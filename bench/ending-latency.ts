/**
 * From the commit of an ending to its consequences: the Keycloak client
 * deleted and the GSAP context revoked, measured at the loopback fakes (the
 * time the DELETE / the revoke POST arrived) against the ending's end_time.
 * The broker runs in its own process with its real Keycloak, GSAP (HTTP) and
 * Chronicle drivers; the Keycloak admin token lives 1 s, and is revoked at
 * the moment the cascade starts, so it is renewed while the work goes on.
 *
 *   npx tsx bench/ending-latency.ts            # 200 single revokes, then one cascade of 1,000
 *   LATENCY_SINGLE=100 LATENCY_CASCADE=2000 LATENCY_DRIVER=postgresql npx tsx bench/ending-latency.ts
 */
import { loadavg } from "node:os";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { createTestDatabase } from "../test/helpers/databases.js";
import { startWorld } from "../test/helpers/real-world.js";
import { summarize } from "./lib/stats.js";
import { killAllServers, startServerProcess } from "./lib/server-process.js";
import { envNumber } from "./lib/env.js";

const SINGLE = envNumber("LATENCY_SINGLE", 200, 1, 1_000_000, { integer: true });
const CASCADE = envNumber("LATENCY_CASCADE", 1000, 1, 1_000_000, { integer: true });
const DRIVER = (process.env.LATENCY_DRIVER ?? "sqlite") as "sqlite" | "postgresql";
const ALICE = "did:web:example.com/user/alice";
const headers = { "x-delegator-did": ALICE };

process.on("SIGINT", () => {
  killAllServers();
  process.exit(130);
});

const world = await startWorld();
const { keycloak, gsap } = world;
keycloak.tokenLifetimeSec = 1;
const db = await createTestDatabase(DRIVER);
for (const ac of ["ac-single", "ac-cascade"]) {
  gsap.setContext({ contextId: ac, status: "authorized", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", expiresAt: new Date(Date.now() + 3600_000).toISOString() });
}
const server = await startServerProcess("broker.ts", {
  // The real drivers against the fakes, with the broker's default HTTP settings.
  env: { ...world.env, HTTP_TIMEOUT_SECONDS: "10", HTTP_MAX_RETRIES: "3", BENCH_DATABASE_URL: db.url },
});
const client = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.ready.grpcPort}` }));

/** Creates `n` delegations from `ac`, 16 at a time. */
async function createMany(ac: string, n: number) {
  const out: { id: string; objectId: string; contextId: string }[] = [];
  for (let i = 0; i < n; i += 16) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(16, n - i) }, () => client.createDelegation({ delegatorAcId: ac, agentType: "bench" }, { headers })),
    );
    for (const c of batch) {
      const clientId = c.delegation!.agentClientId;
      out.push({ id: c.delegation!.delegationId, objectId: keycloak.client(clientId)!.id, contextId: c.delegation!.delegatedAcId });
    }
  }
  return out;
}

/** Arrival times at the fakes, indexed as they come (the bench must not load the cores it measures). */
const deleted = new Map<string, number>();
const revoked = new Map<string, number>();
let seenRequests = 0;
let seenRevocations = 0;
function index(): void {
  for (; seenRequests < keycloak.requests.length; seenRequests++) {
    const r = keycloak.requests[seenRequests]!;
    if (r.route === "delete" && !deleted.has(r.path)) deleted.set(r.path.slice(r.path.lastIndexOf("/") + 1), r.at);
  }
  for (; seenRevocations < gsap.revocations.length; seenRevocations++) {
    const r = gsap.revocations[seenRevocations]!;
    if (!revoked.has(r.contextId)) revoked.set(r.contextId, r.at);
  }
}

/** When each consequence arrived at its fake, relative to the delegation's end time. */
async function latencies(made: { id: string; objectId: string; contextId: string }[]) {
  const until = Date.now() + 60_000;
  const deletedAt = (objectId: string) => deleted.get(objectId);
  const revokedAt = (contextId: string) => revoked.get(contextId);
  const missing = () => made.filter((m) => deletedAt(m.objectId) === undefined || revokedAt(m.contextId) === undefined).length;
  let left = made.length;
  while (left > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    index();
    left = missing();
  }
  const pending = { size: left };
  if (pending.size > 0) throw new Error(`${pending.size} consequences not done within 60 s`);
  const idp: number[] = [];
  const ctx: number[] = [];
  for (const m of made) {
    const d = (await client.getDelegation({ delegationId: m.id }, { headers })).delegation!;
    const end = timestampMs(d.endTime!);
    idp.push(deletedAt(m.objectId)! - end);
    ctx.push(revokedAt(m.contextId)! - end);
  }
  return { idp: summarize(idp), gsap: summarize(ctx) };
}

const fmt = (s: ReturnType<typeof summarize>) => `p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, max ${s.maxMs} ms`;
try {
  console.log(`ending latency on ${DRIVER}: ${SINGLE} single revokes, one cascade of ${CASCADE}; node ${process.version}; load ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  const singles = await createMany("ac-single", SINGLE);
  for (const s of singles) await client.revokeDelegation({ delegationId: s.id }, { headers });
  const single = await latencies(singles);
  console.log(`single revokes: identity deleted ${fmt(single.idp)}; GSAP context revoked ${fmt(single.gsap)}`);

  const many = await createMany("ac-cascade", CASCADE);
  const tokensBefore = keycloak.requests.filter((r) => r.route === "token").length;
  // The admin token the broker holds stops working now: its deletions meet a 401 and renew it mid-cascade.
  keycloak.expireTokens();
  const t0 = performance.now();
  const res = await client.revokeDelegatorContext({ delegatorAcId: "ac-cascade", reason: "gsap_revoked" });
  const rpcMs = performance.now() - t0;
  const cascade = await latencies(many);
  const renewals = keycloak.requests.filter((r) => r.route === "token").length - tokensBefore;
  console.log(
    `cascade of ${res.revokedDelegationIds.length} (RPC ${rpcMs.toFixed(0)} ms): identity deleted ${fmt(cascade.idp)}; GSAP context revoked ${fmt(cascade.gsap)}; ` +
      `${renewals} admin-token renewals meanwhile`,
  );
  console.log(JSON.stringify({ bench: "ending-latency", driver: DRIVER, single, cascade: { ...cascade, n: res.revokedDelegationIds.length, rpcMs: Math.round(rpcMs), renewals } }));
} finally {
  await server.stop();
  killAllServers();
  await world.close();
  await db.drop();
}
