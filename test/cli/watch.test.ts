/**
 * `llm-broker watch` against a real broker, through a TCP relay the test
 * controls: it prints events created after it started; when the connection
 * is cut and refused for a while, it retries with backoff and, once back,
 * resumes after the last revision it saw, so the events of the outage are
 * printed (nothing missed, nothing twice); when the broker restarts (its
 * streams end with UNAVAILABLE), it resumes too; SIGINT stops it with exit 0.
 */
import { type Server, type Socket, createServer, connect as dial } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { type Running, freePort, start, waitFor } from "./cli-process.js";

/** Forwards 127.0.0.1:port to the broker's gRPC port; cut() drops every connection and refuses new ones until resume(). */
class Relay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  constructor(
    readonly port: number,
    public target: () => number,
  ) {}

  resume(): Promise<void> {
    const server = createServer((client) => {
      const upstream = dial(this.target(), "127.0.0.1");
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => {});
      }
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    this.server = server;
    return new Promise((resolve) => server.listen(this.port, "127.0.0.1", () => resolve()));
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }
}

let t: TestBroker;
let relay: Relay;
let env: Record<string, string>;

beforeAll(async () => {
  t = await startTestBroker();
  relay = new Relay(await freePort(), () => t.broker.grpcPort);
  await relay.resume();
  env = { LLM_BROKER_ADDR: `127.0.0.1:${relay.port}`, LLM_BROKER_AS: ALICE };
});
afterAll(async () => {
  await relay?.cut();
  await t?.close();
});

interface Line {
  revision: string;
  event: { type: string; delegation: { delegationId: string } };
}

const create = async () =>
  (await t.connect.createDelegation({ delegatorAcId: "ac-alice-1", scope: {} }, { headers: as(ALICE) })).delegation!.delegationId;

const count = (text: string, re: RegExp) => text.match(new RegExp(re.source, "gm"))?.length ?? 0;

describe("llm-broker watch", { timeout: 90_000 }, () => {
  it("prints events as they happen, resumes after a cut connection and a broker restart with nothing missed or repeated, and exits 0 on SIGINT", async () => {
    const json = start(["watch", "--json"], env);
    const human = start(["watch"], env);
    const both = [json, human];
    const eachPrints = (re: RegExp, from: (p: Running) => () => string = (p) => p.out) => Promise.all(both.map((p) => waitFor(from(p), re, p)));
    try {
      await eachPrints(/^watching 127\.0\.0\.1:\d+ from revision \d+ \(Ctrl-C to stop\)$/m, (p) => p.err);
      const a = await create();
      const [[, jsonLine], [humanLine]] = await Promise.all([waitFor(json.out, new RegExp(`^(.*CREATED.*${a}.*)$`, "m"), json), waitFor(human.out, new RegExp(`^.*${a}.*$`, "m"), human)]);
      expect(JSON.parse(jsonLine!)).toMatchObject({ event: { type: "DELEGATION_EVENT_TYPE_CREATED", delegation: { delegationId: a, state: "DELEGATION_STATE_ACTIVE" } } });
      expect(humanLine).toMatch(
        new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:]+Z  #\\d+  CREATED {13}${a}  claude-code CAP_MUTATE, 500 commands, expires in 59m  \\(by ${ALICE}\\)$`),
      );

      // The connection drops and stays refused while two events happen: they must come on resumption.
      await relay.cut();
      const b = await create();
      await t.connect.revokeDelegation({ delegationId: a, reason: "during the outage" }, { headers: as(ALICE) });
      await Promise.all(both.map((p) => waitFor(p.err, /ECONNREFUSED[^\n]*reconnecting in \d+\.\ds, from revision \d+/, p)));
      await relay.resume();
      await eachPrints(/during the outage|REVOKED.*"delegationId":"del_/);
      await eachPrints(/^watch: resumed after revision \d+$/m, (p) => p.err);

      // The broker restarts (on another port; the relay follows): its streams end with UNAVAILABLE.
      await t.restart();
      const c = await create();
      await eachPrints(new RegExp(c));
      for (const p of both) expect(p.err()).toMatch(/^watch: UNAVAILABLE: [^\n]*; reconnecting in \d+\.\ds, from revision \d+$/m);

      const lines = json.out().trimEnd().split("\n").map((l) => JSON.parse(l) as Line);
      expect(lines.map((l) => [l.event.type.replace("DELEGATION_EVENT_TYPE_", ""), l.event.delegation.delegationId])).toEqual([
        ["CREATED", a],
        ["CREATED", b],
        ["REVOKED", a],
        ["CREATED", c],
      ]);
      const revisions = lines.map((l) => BigInt(l.revision));
      expect(new Set(revisions).size).toBe(4);
      expect(revisions).toEqual([...revisions].sort((x, y) => (x < y ? -1 : 1)));
      expect(human.out().trimEnd().split("\n")).toHaveLength(4);
      expect(count(human.out(), new RegExp(`CREATED +${b}`))).toBe(1);
    } finally {
      for (const p of both) p.child.kill("SIGINT");
      const codes = await Promise.all(both.map(async (p) => (await p.exited).code));
      expect(codes).toEqual([0, 0]);
    }
  });
});
