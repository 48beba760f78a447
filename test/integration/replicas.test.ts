/**
 * Three replicas, each a process of its own, on one PostgreSQL database,
 * with the real Keycloak, GSAP and Chronicle drivers against the loopback
 * fakes. Creates, revokes, authorizations and expiries are spread over all
 * of them; concurrent retries of one request_id race across them; the
 * replica holding the expiry lease is killed with SIGKILL mid-run. Then:
 * every watcher on the survivors saw every event once, in order; one ending
 * per delegation; nothing left in Keycloak or GSAP; every event in Chronicle.
 */
import { durationFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { ClientReadableStream } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventContentId } from "../../src/clients/chronicle/chronicle-event.js";
import { type DelegationEvent, isEndingEvent } from "../../src/domain/index.js";
import { CommandDecision, DelegationEventType, DelegationState, type WatchDelegationsResponse } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { openStore } from "../../src/store/open-store.js";
import { tokenStatus } from "../fakes/keycloak-fake.js";
import { ALICE, as } from "../helpers/broker.js";
import { type BrokerProcess, startBrokerProcess } from "../helpers/broker-process.js";
import { type TestDatabase, createTestDatabase } from "../helpers/databases.js";
import { type World, agentClients, startWorld } from "../helpers/real-world.js";

const ADMIN = as(""); // dev mode: no DID is the local operator (an admin), who sees every delegation

interface Seen {
  revision: bigint;
  type: DelegationEventType;
  delegationId: string;
}

/** A watcher that records every event it is sent, from the start of the log. */
class Watcher {
  readonly seen: Seen[] = [];
  ended = false;
  private readonly ready: Promise<void>;

  constructor(
    readonly replica: number,
    stream: ClientReadableStream<WatchDelegationsResponse>,
  ) {
    this.ready = new Promise((resolve, reject) => {
      stream.on("data", (m: WatchDelegationsResponse) => {
        if (m.kind.case === "event") {
          this.seen.push({ revision: m.revision, type: m.kind.value.type, delegationId: m.kind.value.delegation!.delegationId });
        }
        resolve(); // the first message (a checkpoint, caught up): the watch is live
      });
      stream.on("error", (e) => {
        this.ended = true;
        reject(e);
      });
    });
    this.ready.catch(() => undefined);
    this.cancel = () => stream.cancel();
  }

  cancel: () => void;

  live(): Promise<void> {
    return this.ready;
  }

  get last(): bigint {
    return this.seen.at(-1)?.revision ?? 0n;
  }
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const started = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("three replicas on one PostgreSQL", () => {
  let world: World;
  let db: TestDatabase;
  let env: Record<string, string>;
  const replicas: (BrokerProcess | undefined)[] = [];
  const watchers: Watcher[] = [];

  beforeAll(async () => {
    [world, db] = await Promise.all([startWorld(), createTestDatabase("postgresql")]);
    world.delegatorContext("ac-alice", ALICE);
    env = {
      ...world.env,
      DATABASE_URL: db.url,
      LLM_BROKER_PORT: "0",
      LLM_BROKER_WEB_PORT: "0",
      LOG_LEVEL: "warn",
      HTTP_TIMEOUT_SECONDS: "5",
      CREATE_INFLIGHT_SECONDS: "2",
      RECONCILE_INTERVAL_SECONDS: "5",
      RATE_LIMIT_CREATE_PER_MINUTE: "100000",
      RATE_LIMIT_AUTHORIZE_PER_SECOND: "100000",
    };
    // The first migrates; the others then find the schema current.
    replicas.push(await startBrokerProcess(env));
    replicas.push(...(await Promise.all([startBrokerProcess(env), startBrokerProcess(env)])));
    for (const [i, r] of replicas.entries()) {
      for (let k = 0; k < 2; k++) watchers.push(new Watcher(i, r!.grpc.watch({ startRevision: 0n }, ADMIN)));
    }
    await Promise.all(watchers.map((w) => w.live()));
  }, 120_000);

  afterAll(async () => {
    for (const w of watchers) w.cancel();
    await Promise.all(replicas.map((r) => r?.kill()));
    await world?.close();
    await db?.drop();
  });

  const live = () => replicas.flatMap((r, i) => (r ? [{ r, i }] : []));
  const on = (i: number) => replicas[i]!.grpc;

  it("answers concurrent retries of one request_id, spread over the replicas, with one delegation and one working secret", async () => {
    for (let round = 0; round < 20; round++) {
      const req = { delegatorAcId: "ac-alice", requestId: `race-${round}`, scope: { ttl: durationFromMs(3600_000) } };
      // Two retries on each replica, all at once.
      const answers = await Promise.all(
        [0, 1, 2, 0, 1, 2].map((i) => on(i).unary("createDelegation", req, as(ALICE), 30_000)),
      );
      const ids = new Set(answers.map((a) => a.delegation!.delegationId));
      expect(ids.size, `round ${round}: delegations`).toBe(1);
      const withSecret = answers.filter((a) => a.agentCredential!.clientSecret !== "");
      expect(withSecret, `round ${round}: secrets`).toHaveLength(1);
      expect(answers.filter((a) => !a.replayed)).toHaveLength(1);
      expect(answers.some((a) => a.credentialRotated)).toBe(false);
      const { clientId, clientSecret } = withSecret[0]!.agentCredential!;
      expect(await tokenStatus(world.keycloak, clientId, clientSecret)).toBe(200);
    }
    expect(world.keycloak.requestsTo("create")).toHaveLength(20);
    expect(world.keycloak.requestsTo("regenerateSecret")).toHaveLength(0);
  }, 120_000);

  it("survives SIGKILL of the replica holding the expiry lease: every event once, in order, one ending each, nothing left behind", async () => {
    const ttl = (ms: number) => ({ ttl: durationFromMs(ms) });
    const created: { id: string; expireTime: number; short: boolean }[] = [];
    const create = async (i: number, scope: Record<string, unknown>, short: boolean) => {
      const c = await on(i).unary("createDelegation", { delegatorAcId: "ac-alice", scope }, as(ALICE), 30_000);
      created.push({ id: c.delegation!.delegationId, expireTime: Number(timestampMs(c.delegation!.expireTime!)), short });
      return c.delegation!.delegationId;
    };

    // While all three run: creates on each, revokes and authorizations on another one.
    for (let n = 0; n < 30; n++) {
      const i = n % 3;
      const id = await create(i, n % 3 === 0 ? ttl(4_000) : ttl(3600_000), n % 3 === 0);
      const other = (i + 1) % 3;
      if (n % 3 === 1) expect((await on(other).unary("authorizeCommand", { delegationId: id, command: "ls -la" }, as(ALICE))).decision).toBe(CommandDecision.ALLOW);
      if (n % 5 === 2) await on(other).unary("revokeDelegation", { delegationId: id, reason: "done" }, as(ALICE));
    }
    // A budget spent over all three replicas: exactly three ALLOWs.
    const budgeted = await create(1, { ...ttl(3600_000), maxCommands: 3 }, false);
    const decisions = await Promise.all(
      Array.from({ length: 9 }, (_, k) => on(k % 3).unary("authorizeCommand", { delegationId: budgeted, command: `echo ${k}` }, as(ALICE))),
    );
    expect(decisions.filter((d) => d.decision === CommandDecision.ALLOW)).toHaveLength(3);

    // Kill the replica that runs expiry just before a batch comes due: the batch waits for the takeover.
    const holder = await until("a replica to hold the expiry lease", async () => {
      for (const { r, i } of live()) {
        const h = (await (await fetch(`http://127.0.0.1:${r.webPort}/healthz`)).json()) as { loops: { name: string; leader: boolean }[] };
        if (h.loops.find((l) => l.name === "expiry")?.leader) return i;
      }
      return undefined;
    });
    const batch = created.length;
    for (let n = 0; n < 12; n++) await create(n % 3, ttl(2_000), true);
    const due = Math.min(...created.slice(batch).map((c) => c.expireTime));
    await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now() - 100)));
    await replicas[holder]!.kill();
    replicas[holder] = undefined;
    const killedAt = Date.now();

    // The survivors go on: more creates (some due soon), authorizations and revokes.
    const survivors = live().map((s) => s.i);
    for (let n = 0; n < 12; n++) {
      const i = survivors[n % survivors.length]!;
      const id = await create(i, n % 2 === 0 ? ttl(2_000) : ttl(3600_000), n % 2 === 0);
      if (n % 4 === 1) await on(survivors[(n + 1) % survivors.length]!).unary("revokeDelegation", { delegationId: id }, as(ALICE));
      if (n % 4 === 3) await on(i).unary("authorizeCommand", { delegationId: id, command: "git status" }, as(ALICE));
    }

    // Everything short-lived has expired; every ending's consequences are done; the audit log has it all.
    const first = survivors[0]!;
    await until("the short-lived delegations to expire", async () => {
      const active = (await on(first).unary("listAgents", { pageSize: 500 }, ADMIN)).delegations;
      const shortIds = new Set(created.filter((c) => c.short).map((c) => c.id));
      return active.some((d) => shortIds.has(d.delegationId)) ? undefined : true;
    });
    const active = async () => (await on(first).unary("listAgents", { pageSize: 500 }, ADMIN)).delegations;
    await until("Keycloak to hold only live identities", async () => {
      const live = (await active()).map((d) => d.agentClientId).sort();
      const clients = agentClients(world).map((c) => c.clientId).sort();
      return JSON.stringify(live) === JSON.stringify(clients) ? true : undefined;
    });

    const store = await openStore(db.url);
    let log: DelegationEvent[];
    try {
      log = await store.readEvents(0n, 100_000);
      const head = log.at(-1)!.revision;
      await until("GSAP to have every ended delegation's context revoked", async () => {
        const ended = (await Promise.all(created.map((c) => store.get(c.id)))).filter((d) => d && d.state !== "ACTIVE");
        return ended.every((d) => world.gsap.isRevoked(d!.delegatedAcId)) ? true : undefined;
      });
      await until("Chronicle to have every event", async () => {
        const received = new Set(world.chronicle.received().map((r) => r.deliveryId));
        return log.every((e) => received.has(eventContentId(e))) ? true : undefined;
      });
      const onSurvivors = watchers.filter((w) => survivors.includes(w.replica));
      await until("the survivors' watchers to reach the head", async () => (onSurvivors.every((w) => w.last >= head) ? true : undefined));

      // Every watcher on a survivor: the whole log, each event once, in order.
      // Decisions (the refused commands over the budget) go to the audit log only, not to Watch.
      const expected = log.filter((e) => e.type !== "COMMAND_DECIDED").map((e) => ({ revision: e.revision, type: DelegationEventType[e.type as keyof typeof DelegationEventType], delegationId: e.delegation.id }));
      for (const w of onSurvivors) expect(w.seen, `watcher on replica ${w.replica}`).toEqual(expected);
    } finally {
      await store.close();
    }

    // One ending per delegation; one EXPIRED for each that expired, on time despite the kill.
    const endings = new Map<string, DelegationEvent[]>();
    for (const e of log) if (isEndingEvent(e.type)) endings.set(e.delegation.id, [...(endings.get(e.delegation.id) ?? []), e]);
    for (const [id, es] of endings) expect(es.map((e) => e.type), id).toHaveLength(1);
    const expired = log.filter((e) => e.type === "EXPIRED");
    expect(new Set(expired.map((e) => e.delegation.id))).toEqual(new Set(created.filter((c) => c.short && !endings.get(c.id)?.some((e) => e.type === "REVOKED")).map((c) => c.id)));
    const lateness = expired.map((e) => e.eventTime - e.delegation.expireTime);
    const dueAfterKill = expired.filter((e) => e.delegation.expireTime > killedAt).map((e) => e.eventTime - e.delegation.expireTime);
    // The lease takes LEASE_TTL_MS (1.2 s) to lapse; the goal is within 2 s (bench/replicas.ts measures it).
    expect(Math.max(...dueAfterKill)).toBeLessThan(5_000);
    expect(Math.max(...lateness)).toBeLessThan(5_000);
    expect(endings.get(budgeted)?.map((e) => e.type)).toEqual(["COMMAND_LIMIT_REACHED"]);

    // Each identity deleted once, by one replica (a DELETE repeated only if it was in flight at the kill).
    const deletes = world.keycloak.requestsTo("delete").filter((r) => r.at < killedAt - 1_000);
    expect(new Set(deletes.map((r) => r.path)).size).toBe(deletes.length);
  }, 180_000);
});
