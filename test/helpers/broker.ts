/**
 * Starts a real broker for a test: real listeners on ephemeral ports, a real
 * database (SQLite file or fresh PostgreSQL database), the stub registrar and
 * dev GSAP unless a test passes its own. Gives a grpc-js client and Connect
 * clients over each protocol.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { type Broker, type BrokerOverrides, startBroker } from "../../src/app.js";
import { type Settings, loadSettings } from "../../src/config/settings.js";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { createLogger } from "../../src/logging.js";
import { type Driver, type TestDatabase, createTestDatabase } from "./databases.js";
import { GrpcTestClient } from "./grpc-client.js";

export interface TestBroker {
  broker: Broker;
  settings: Settings;
  db: TestDatabase;
  grpc: GrpcTestClient;
  /** Connect protocol over HTTP/1.1 on the web port. */
  connect: Client<typeof DelegationService>;
  /** gRPC-Web over HTTP/1.1 on the web port. */
  grpcWeb: Client<typeof DelegationService>;
  /** Connect's gRPC client against the grpc-js port. */
  connectGrpc: Client<typeof DelegationService>;
  /** Stops the broker (keeping the database) and starts a new one on it. */
  restart(overrides?: BrokerOverrides): Promise<void>;
  /** Moves the broker's clock forward (retries, backoffs and expiry come due). */
  advanceClock(ms: number): void;
  /** Runs the background work the broker has now until it is done (see settle). */
  settle(): Promise<void>;
  close(): Promise<void>;
}

export interface TestBrokerOptions {
  driver?: Driver;
  env?: Record<string, string>;
  overrides?: BrokerOverrides;
  /** Reuse this database instead of creating one. */
  db?: TestDatabase;
}

/** Headers that make the caller `did` in dev auth mode. */
export function as(did: string): Record<string, string> {
  return { "x-delegator-did": did };
}

export const ALICE = "did:web:example.com/user/alice";
export const BOB = "did:web:example.com/user/bob";

/** Starts a broker; close() stops it and drops its database. */
export async function startTestBroker(options: TestBrokerOptions = {}): Promise<TestBroker> {
  const db = options.db ?? (await createTestDatabase(options.driver ?? "sqlite"));
  const settings = loadSettings({
    LLM_BROKER_PORT: "0",
    LLM_BROKER_WEB_PORT: "0",
    DATABASE_URL: db.url,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    WATCH_POLL_MS: "200",
    // Suites create hundreds of delegations as one principal; the limits suite sets its own.
    RATE_LIMIT_CREATE_PER_MINUTE: "1000000",
    RATE_LIMIT_AUTHORIZE_PER_SECOND: "1000000",
    // A test that stops a broker with calls still in flight should not wait the production 10 s.
    SHUTDOWN_GRACE_SECONDS: "2",
    ...options.env,
  });
  const log = createLogger({ level: settings.logLevel });
  let offset = 0;
  const clock = () => Date.now() + offset;
  let broker = await startBroker(settings, { log, clock, ...options.overrides });
  const clients = () => {
    const grpc = new GrpcTestClient(`127.0.0.1:${broker.grpcPort}`);
    const web = `http://127.0.0.1:${broker.webPort}`;
    return {
      grpc,
      connect: createClient(DelegationService, createConnectTransport({ baseUrl: web, httpVersion: "1.1" })),
      grpcWeb: createClient(DelegationService, createGrpcWebTransport({ baseUrl: web, httpVersion: "1.1" })),
      connectGrpc: createClient(
        DelegationService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${broker.grpcPort}` }),
      ),
    };
  };
  const t: TestBroker = {
    broker,
    settings,
    db,
    ...clients(),
    async restart(overrides) {
      t.grpc.close();
      await broker.stop();
      broker = await startBroker(settings, { log, clock, ...(overrides ?? options.overrides) });
      Object.assign(t, { broker, ...clients() });
    },
    advanceClock(ms) {
      offset += ms;
    },
    settle: () => settle(t.broker),
    async close() {
      t.grpc.close();
      await broker.stop();
      if (!options.db) await db.drop();
    },
  };
  return t;
}

/**
 * Runs the broker's background work until what it has now is done: the log
 * follower catches up, then the reconciler, the consequence workers and the
 * audit outbox run a few rounds (work that fails stays pending, as in production).
 */
export async function settle(broker: Broker, rounds = 3): Promise<void> {
  const b = broker.background;
  for (let i = 0; i < rounds; i++) {
    await broker.follower.catchUp();
    for (const loop of [b.reconciler, b.expiry, b.ceremonies, b.liveChecks, b.idpCleanup, b.gsapRevoke, b.outboxLoop]) {
      for (let n = 0; n < 100; n++) {
        const run = await loop.runOnce().catch(() => undefined);
        if (!run || run.skipped || !run.more) break;
      }
    }
  }
}
