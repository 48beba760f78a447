/**
 * The composition root: builds the store, drivers, use cases, background
 * loops and listeners from settings, and tears them down in order.
 */
import { readFile } from "node:fs/promises";
import type { AuditSink } from "./clients/chronicle/chronicle-client.js";
import { eventContentId } from "./clients/chronicle/chronicle-event.js";
import { createAuditSink } from "./clients/chronicle/factory.js";
import { createGsap } from "./clients/gsap/factory.js";
import type { GsapClient } from "./clients/gsap/gsap-client.js";
import type { Settings } from "./config/settings.js";
import { DelegationManager } from "./delegation/manager.js";
import { AuditOutbox } from "./events/audit-outbox.js";
import { WatchHub } from "./events/watch-hub.js";
import { DelegationService } from "./gen/llmbroker/v1/delegation_service_pb.js";
import { type Logger, createLogger } from "./logging.js";
import type { AgentRegistrar } from "./registrars/registrar.js";
import { createRegistrar } from "./registrars/factory.js";
import { ExpiryScheduler } from "./scheduler/expiry-scheduler.js";
import { Loop } from "./scheduler/loop.js";
import { createDelegationService } from "./server/delegation-service.js";
import { authentication, errorMapping, intercept, logging } from "./server/interceptors.js";
import { createAuthenticator } from "./server/authenticator.js";
import { limits } from "./server/limits.js";
import { type RunningServer, startServer } from "./server/create-server.js";
import { openStore } from "./store/open-store.js";
import type { DelegationStore } from "./store/store.js";

/** Replacements for the drivers settings would build (tests, embedding). */
export interface BrokerOverrides {
  store?: DelegationStore;
  registrar?: AgentRegistrar;
  gsap?: GsapClient;
  audit?: AuditSink;
  log?: Logger;
  clock?: () => number;
}

export interface Broker {
  grpcPort: number;
  webPort: number;
  manager: DelegationManager;
  hub: WatchHub;
  store: DelegationStore;
  expiry: ExpiryScheduler;
  cleanup: Loop;
  maintenance: Loop;
  outbox: AuditOutbox;
  /** The drivers in use, as selected (auto resolved). */
  drivers: { registrar: string; gsap: string; audit: string };
  stop(): Promise<void>;
}

/** Starts the broker described by `settings`. */
export async function startBroker(settings: Settings, overrides: BrokerOverrides = {}): Promise<Broker> {
  const log = overrides.log ?? createLogger({ level: settings.logLevel });
  const registrar = overrides.registrar ?? createRegistrar(settings, log);
  const gsap = overrides.gsap ?? createGsap(settings, log);
  const sink = overrides.audit ?? createAuditSink(settings, log);
  const store = overrides.store ?? (await openStore(settings.databaseUrl, { contentId: eventContentId }));
  const clock = overrides.clock ?? Date.now;
  const outbox = new AuditOutbox(store, sink, { log, clock });

  const hub = new WatchHub(store, {
    pollMs: settings.watchPollMs,
    bufferLimit: settings.watchBufferEvents,
    checkpointMs: settings.watchCheckpointMs,
    log,
  });
  await hub.start();

  let expiry: ExpiryScheduler | undefined;
  let cleanup: Loop | undefined;
  const manager = new DelegationManager({
    store,
    registrar,
    gsap,
    settings,
    log,
    clock,
    hooks: {
      expiryScheduled: (t) => expiry?.notify(t),
      cleanupNeeded: () => void cleanup?.kick(),
    },
    audit: {
      failClosed: settings.auditFailClosed,
      timeoutMs: settings.auditFailClosedTimeoutMs,
      ready: () => outbox.ready(settings.auditFailClosedTimeoutMs),
      waitDelivered: (revision, ms) => outbox.waitDelivered(revision, ms),
    },
  });
  expiry = new ExpiryScheduler(manager, { clock, log });
  cleanup = new Loop({ name: "idp-cleanup", task: () => manager.cleanupIdentities(), intervalMs: 30_000, log });
  // The reconciler: interrupted creates, orphaned identities, and housekeeping.
  const maintenance = new Loop({
    name: "reconciler",
    intervalMs: settings.reconcileIntervalMs,
    log,
    task: async () => {
      const failed = await manager.reconcileStale();
      const orphans = await manager.sweepOrphans();
      await manager.pruneIdempotency();
      await store.pruneEvents(clock() - settings.eventRetentionMs);
      return failed + orphans;
    },
  });

  // Finish what a previous run left: interrupted creates, overdue expiries,
  // pending deletions, undelivered audit events.
  await manager.reconcileStale();
  outbox.start();
  await expiry.start();
  cleanup.start();
  maintenance.start();

  const impl = intercept(DelegationService, createDelegationService({ manager, hub }), [
    errorMapping(log), // outermost: every failure below leaves as a safe ConnectError
    logging(log), // one debug line per call, with the code
    authentication(createAuthenticator(settings)), // the caller, for the limits, the handlers and the use cases
    limits(settings.limits, log), // per-principal rates, deadlines, watch streams
  ]);
  let server: RunningServer;
  try {
    server = await startServer(impl, {
      host: settings.host,
      grpcPort: settings.grpcPort,
      webPort: settings.webPort,
      corsOrigins: settings.corsOrigins,
      maxMessageBytes: settings.limits.maxRequestBytes,
      maxConcurrentStreams: settings.limits.maxConcurrentStreams,
      ...(settings.authMode === "mtls"
        ? {
            tls: {
              cert: await readFile(settings.auth.tlsCertFile, "utf8"),
              key: await readFile(settings.auth.tlsKeyFile, "utf8"),
              clientCa: await readFile(settings.auth.tlsClientCaFile, "utf8"),
            },
          }
        : {}),
      routes: {
        "/healthz": async () => ({
          status: "ok",
          revision: (await store.headRevision()).toString(),
          watchers: hub.subscriberCount,
          driver: store.driver,
          registrar: registrar.backend,
          gsap: gsap.mode,
          audit: { driver: sink.mode, failClosed: settings.auditFailClosed, ...(await outbox.health()) },
        }),
      },
    });
  } catch (err) {
    await Promise.all([expiry.stop(), cleanup.stop(), maintenance.stop(), hub.stop(), outbox.stop()]);
    await store.close();
    throw err;
  }
  log.info({ grpcPort: server.grpcPort, webPort: server.webPort, driver: store.driver, registrar: registrar.backend }, "broker started");

  return {
    grpcPort: server.grpcPort,
    webPort: server.webPort,
    manager,
    hub,
    store,
    expiry,
    cleanup,
    maintenance,
    outbox,
    drivers: { registrar: registrar.backend, gsap: gsap.mode, audit: sink.mode },
    async stop() {
      await server.close();
      await Promise.all([expiry!.stop(), cleanup!.stop(), maintenance.stop(), hub.stop(), outbox.stop()]);
      await Promise.all([registrar.close(), gsap.close(), sink.close()]);
      await store.close();
    },
  };
}
