/**
 * Several replicas on one PostgreSQL database (each `bench/servers/broker.ts`
 * in its own process: stub registrar, dev GSAP, the broker's own settings).
 *
 * 1. Watch across replicas: REPLICA_WATCHERS watchers on replica A and as
 *    many on replica B; REPLICA_REVOKES revokes, one after another, on A.
 *    For each, the time from the revoke's answer to the REVOKED event at each
 *    watcher. Watchers on A (the same replica) are the baseline; B's figures
 *    are reported as a ratio of A's.
 * 2. Takeover: three replicas; REPLICA_DUE delegations come due at one
 *    moment. First with all three alive (the baseline), then again with the
 *    replica that holds the expiry lease killed (SIGKILL) 100 ms before they
 *    are due. Lateness = the EXPIRED event's time - expire_time.
 *
 *   npx tsx bench/replicas.ts
 *   REPLICA_WATCHERS=200 REPLICA_REVOKES=500 REPLICA_DUE=1000 npx tsx bench/replicas.ts
 */
import { setMaxListeners } from "node:events";
import { loadavg } from "node:os";
import { durationFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DelegationEventType } from "../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { openStore } from "../src/store/open-store.js";
import { createTestDatabase } from "../test/helpers/databases.js";
import { type LatencySummary, summarize } from "./lib/stats.js";
import { type ServerProcess, killAllServers, startServerProcess } from "./lib/server-process.js";
import { envNumber } from "./lib/env.js";

const WATCHERS = envNumber("REPLICA_WATCHERS", 50, 0, 100_000, { integer: true });
const REVOKES = envNumber("REPLICA_REVOKES", 200, 1, 1_000_000, { integer: true });
const DUE = envNumber("REPLICA_DUE", 300, 0, 1_000_000, { integer: true });
const ALICE = { "x-delegator-did": "did:web:example.com/user/alice" };
const ADMIN = { "x-delegator-did": "" };

process.on("SIGINT", () => {
  killAllServers();
  process.exit(130);
});

type Broker = Client<typeof DelegationService>;
const now = () => performance.timeOrigin + performance.now();
const clientOf = (s: ServerProcess): Broker =>
  createClient(DelegationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${s.ready.grpcPort}` }));

const db = await createTestDatabase("postgresql");
const env = { BENCH_DATABASE_URL: db.url };
// One at a time: the first applies the migrations.
const replicas: ServerProcess[] = [];
for (let i = 0; i < 3; i++) replicas.push(await startServerProcess("broker.ts", { env }));
const clients = replicas.map(clientOf);
const [a, b] = clients as [Broker, Broker, Broker];

// ---- 1. Watch across replicas ---------------------------------------------

/** Opens `n` watchers on `client`; each records when it saw each delegation's REVOKED event. */
async function openWatchers(client: Broker, n: number, abort: AbortSignal) {
  const seen = Array.from({ length: n }, () => new Map<string, number>());
  let live = 0;
  await new Promise<void>((resolve, reject) => {
    for (const map of seen) {
      void (async () => {
        let first = true;
        try {
          for await (const m of client.watchDelegations({ startRevision: 0n }, { headers: ADMIN, signal: abort })) {
            if (first) {
              first = false;
              if (++live === n) resolve();
            }
            if (m.kind.case === "event" && m.kind.value.type === DelegationEventType.REVOKED) map.set(m.kind.value.delegation!.delegationId, now());
          }
        } catch (err) {
          if (!abort.aborted) reject(err);
        }
      })();
    }
  });
  return seen;
}

const stopWatching = new AbortController();
setMaxListeners(0, stopWatching.signal); // one listener per watcher
const [onA, onB] = await Promise.all([openWatchers(a, WATCHERS, stopWatching.signal), openWatchers(b, WATCHERS, stopWatching.signal)]);
const ids: string[] = [];
for (let i = 0; i < REVOKES; i += 20) {
  const batch = await Promise.all(Array.from({ length: Math.min(20, REVOKES - i) }, () => a.createDelegation({ delegatorAcId: "ac-bench" }, { headers: ALICE })));
  ids.push(...batch.map((c) => c.delegation!.delegationId));
}
const answered = new Map<string, number>();
for (const id of ids) {
  await a.revokeDelegation({ delegationId: id }, { headers: ALICE });
  answered.set(id, now());
  await new Promise((r) => setTimeout(r, 10));
}
const allSeen = async (watchers: Map<string, number>[]) => {
  const until = Date.now() + 30_000;
  while (!watchers.every((w) => ids.every((id) => w.has(id)))) {
    if (Date.now() > until) throw new Error("not every watcher saw every revoke");
    await new Promise((r) => setTimeout(r, 50));
  }
};
await Promise.all([allSeen(onA), allSeen(onB)]);
stopWatching.abort();
const latencies = (watchers: Map<string, number>[]) => watchers.flatMap((w) => ids.map((id) => w.get(id)! - answered.get(id)!));
const watchSame = summarize(latencies(onA));
const watchOther = summarize(latencies(onB));

// ---- 2. Takeover after SIGKILL ------------------------------------------------

interface HealthLoops {
  loops: { name: string; leader: boolean }[];
}

/** The expiry lanes (`expiry`, and `expiry-2` on PostgreSQL) replica `i` leads. */
async function lanesLed(i: number): Promise<string[]> {
  const h = (await (await fetch(`http://127.0.0.1:${replicas[i]!.ready.webPort}/healthz`)).json()) as HealthLoops;
  return h.loops.filter((l) => /^expiry(-\d+)?$/.test(l.name) && l.leader).map((l) => l.name);
}

async function expiryHolder(alive: number[]): Promise<number> {
  for (;;) {
    for (const i of alive) {
      const h = (await (await fetch(`http://127.0.0.1:${replicas[i]!.ready.webPort}/healthz`)).json()) as HealthLoops;
      if (h.loops.find((l) => l.name === "expiry")?.leader) return i;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Creates DUE delegations over `alive`, all due at about the same moment; returns their ids and the moment. */
async function dueBatch(alive: number[]): Promise<{ ids: string[]; dueAt: number }> {
  // Time enough to create them all; each asks for what is left until the common moment.
  const target = Date.now() + 4_000 + Math.ceil(DUE / 100) * 1_000;
  const made: { id: string; expire: number }[] = [];
  for (let i = 0; i < DUE; i += 20) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(20, DUE - i) }, (_, k) =>
        clients[alive[(i + k) % alive.length]!]!.createDelegation({ delegatorAcId: "ac-bench", scope: { ttl: durationFromMs(target - Date.now()) } }, { headers: ALICE }),
      ),
    );
    made.push(...batch.map((c) => ({ id: c.delegation!.delegationId, expire: Number(timestampMs(c.delegation!.expireTime!)) })));
  }
  return { ids: made.map((m) => m.id), dueAt: Math.min(...made.map((m) => m.expire)) };
}

/** Lateness of each delegation's EXPIRED event, read from the log once all have one. */
async function lateness(ids: string[]): Promise<LatencySummary & { expiredEvents: number }> {
  const store = await openStore(db.url);
  try {
    const wanted = new Set(ids);
    const until = Date.now() + 60_000;
    for (;;) {
      const events = (await store.readEvents(0n, 1_000_000)).filter((e) => e.type === "EXPIRED" && wanted.has(e.delegation.id));
      if (new Set(events.map((e) => e.delegation.id)).size === wanted.size) {
        return { ...summarize(events.map((e) => e.eventTime - e.delegation.expireTime)), expiredEvents: events.length };
      }
      if (Date.now() > until) throw new Error(`only ${events.length} of ${wanted.size} expired`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await store.close();
  }
}

const all = [0, 1, 2];
const calm = await dueBatch(all);
const calmLate = await lateness(calm.ids);

const killed = await expiryHolder(all);
const survivors = all.filter((i) => i !== killed);
const stormy = await dueBatch(all);
await new Promise((r) => setTimeout(r, Math.max(0, stormy.dueAt - Date.now() - 100)));
const killedLanes = await lanesLed(killed);
process.kill(replicas[killed]!.pid, "SIGKILL");
const killedAt = Date.now();
const takeover = await expiryHolder(survivors);
const takenOverAfterMs = Date.now() - killedAt;
const killLate = await lateness(stormy.ids);

await Promise.all(survivors.map((i) => replicas[i]!.stop()));
await db.drop();

const fmt = (s: LatencySummary) => `p50 ${s.p50Ms.toFixed(1)} ms  p99 ${s.p99Ms.toFixed(1)} ms  max ${s.maxMs.toFixed(1)} ms  (n=${s.count})`;
console.log(`load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
console.log(`watch, revoke answered on A -> event at watcher (${WATCHERS} watchers per replica, ${REVOKES} revokes)`);
console.log(`  same replica (A)   ${fmt(watchSame)}`);
console.log(`  other replica (B)  ${fmt(watchOther)}   p99 ${(watchOther.p99Ms / watchSame.p99Ms).toFixed(2)}x of A`);
console.log(`expiry lateness, ${DUE} delegations due at once`);
console.log(`  all replicas alive ${fmt(calmLate)}`);
console.log(`  holder killed      ${fmt(killLate)}   (replica ${killed}, leading ${killedLanes.join(" and ")}, killed 100 ms before due; replica ${takeover} held the expiry lease ${takenOverAfterMs} ms later)`);
console.log(`  EXPIRED events: ${calmLate.expiredEvents + killLate.expiredEvents} for ${2 * DUE} delegations`);
console.log(
  JSON.stringify({
    watchSameReplica: watchSame,
    watchOtherReplica: watchOther,
    expiryAlive: calmLate,
    expiryAfterKill: killLate,
    takeoverMs: takenOverAfterMs,
    killedLanes,
    loadavg: loadavg(),
  }),
);
