/**
 * After a full scenario with the real drivers (Keycloak, GSAP over HTTP,
 * Chronicle), no secret appears in plain text anywhere the broker writes:
 * its log (every level), every table of its database (events included),
 * every Chronicle delivery, every error a client received.
 */
import { Writable } from "node:stream";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/logging.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { GSAP_TOKEN, type World, startWorld } from "../helpers/real-world.js";

/** The places (corpus names) where any of `secrets` occurs. */
function leaks(corpora: Record<string, string[]>, secrets: string[]): string[] {
  const found: string[] = [];
  for (const [name, texts] of Object.entries(corpora)) {
    for (const text of texts) for (const secret of secrets) if (text.includes(secret)) found.push(`${name}: …${secret.slice(0, 4)}…`);
  }
  return found;
}

describe("secrets stay secret", () => {
  let world: World;
  let t: TestBroker;
  const lines: string[] = [];
  const agentSecrets: string[] = [];
  const errors: string[] = [];

  beforeAll(async () => {
    world = await startWorld();
    world.gsap.faultMethod = "POST";
    world.delegatorContext("ac-scan", ALICE);
    const destination = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    t = await startTestBroker({ env: world.env, overrides: { log: createLogger({ level: "trace", destination }) } });

    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-scan", requestId: `scan-${i}` }, as(ALICE));
      agentSecrets.push(c.agentCredential!.clientSecret);
      ids.push(c.delegation!.delegationId);
      // A replay must not carry it either.
      const replay = await t.connect.createDelegation({ delegatorAcId: "ac-scan", requestId: `scan-${i}` }, { headers: as(ALICE) });
      errors.push(JSON.stringify(replay.agentCredential));
    }
    for (const id of ids) await t.grpc.unary("authorizeCommand", { delegationId: id, command: "git status" }, as(ALICE));
    await t.grpc.unary("revokeDelegation", { delegationId: ids[0]!, reason: "scan" }, as(ALICE));
    await t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-scan" });
    // Failures on the way: GSAP after the identity exists, Keycloak on the secret read.
    world.gsap.failNext(1, 500);
    world.keycloak.inject("getSecret", { kind: "status", status: 500 }, 3);
    for (const _ of [0, 1]) {
      const e = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-scan" }, as(ALICE)).catch((err: unknown) => err);
      errors.push(JSON.stringify(e), String((e as Error).message));
    }
    for (let i = 0; i < 20 && (await t.broker.store.auditBacklog()).pending > 0; i++) await t.broker.outbox.runOnce().catch(() => 0);
    await t.broker.cleanup.runOnce();
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await world?.close();
  });

  it("finds no agent secret, admin secret or bearer token in logs, database, events, Chronicle or errors", async () => {
    expect(agentSecrets.every((s) => s.length >= 16)).toBe(true);
    const secrets = [...agentSecrets, world.keycloak.adminClientSecret, GSAP_TOKEN];
    const db = new Database(t.db.url.slice("file:".length), { readonly: true });
    const rows: string[] = [];
    try {
      const tables = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all() as { name: string }[];
      for (const { name } of tables) for (const row of db.prepare(`SELECT * FROM "${name}"`).all()) rows.push(JSON.stringify(row, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
    } finally {
      db.close();
    }
    const chronicle = world.chronicle.attempts.map((a) => JSON.stringify(a.headers) + a.text);
    const corpora = { log: lines, database: rows, chronicle, errors };
    // The scan sees what it should: the corpora are not empty, and a planted secret is found.
    expect(lines.length).toBeGreaterThan(20);
    expect(rows.some((r) => r.includes("delegation_events") || r.includes("DELEGATION") || r.includes("CREATED"))).toBe(true);
    expect(chronicle.length).toBeGreaterThan(5);
    expect(leaks({ planted: [`x ${agentSecrets[2]} y`] }, secrets)).toHaveLength(1);
    expect(leaks(corpora, secrets)).toEqual([]);
  });
});
