/**
 * The composition root: builds the store, drivers, use cases, the log
 * follower with its consumers (watch hub, background loops) and the
 * listeners from settings, and tears them down in order.
 *
 * Start-up does nothing slow before the ports are bound: expiring what fell
 * due while the broker was down, finishing interrupted creates and pruning
 * all run in the background loops once it listens.
 */
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { type Background, createBackground } from "./background.js";
import type { AuditSink } from "./clients/chronicle/chronicle-client.js";
import { eventContentId } from "./clients/chronicle/chronicle-event.js";
import { createAuditSink } from "./clients/chronicle/factory.js";
import { createGsap } from "./clients/gsap/factory.js";
import type { GsapClient } from "./clients/gsap/gsap-client.js";
import type { Settings } from "./config/settings.js";
import { type UseCases, createUseCases } from "./delegation/use-cases.js";
import type { EffectKind } from "./domain/index.js";
import { LogFollower } from "./events/log-follower.js";
import { InProcessNotifier, type RevisionNotifier } from "./events/notifier.js";
import { NOTIFY_CHANNEL, PgNotifier } from "./events/pg-notifier.js";
import { WatchHub } from "./events/watch-hub.js";
import { DelegationService } from "./gen/llmbroker/v1/delegation_service_pb.js";
import { type Logger, createLogger } from "./logging.js";
import type { AgentRegistrar } from "./registrars/registrar.js";
import { createRegistrar } from "./registrars/factory.js";
import { createAuthenticator } from "./server/authenticator.js";
import { type RunningServer, startServer } from "./server/create-server.js";
import { createDelegationService } from "./server/delegation-service.js";
import { authentication, errorMapping, intercept, logging } from "./server/interceptors.js";
import { limits } from "./server/limits.js";
import { parseDatabaseUrl } from "./store/database-url.js";
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
  /** Told when a consequence of an ending is done, with the time since the ending (benchmarks). */
  onEffectDone?: (kind: EffectKind, latencyMs: number) => void;
  /** Told how late each expiry was (benchmarks). */
  onExpired?: (lateMs: number) => void;
  /** Told when an event has been handed to every Watch subscriber (benchmarks). */
  onFannedOut?: (eventTime: number, deliveries: number, doneAt: number) => void;
}

export interface Broker {
  grpcPort: number;
  webPort: number;
  useCases: UseCases;
  hub: WatchHub;
  follower: LogFollower;
  notifier: RevisionNotifier;
  store: DelegationStore;
  background: Background;
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
  const postgres = parseDatabaseUrl(settings.databaseUrl).provider === "postgresql";
  const store =
    overrides.store ??
    (await openStore(settings.databaseUrl, { contentId: eventContentId, ...(postgres ? { notifyChannel: NOTIFY_CHANNEL } : {}) }));
  const clock = overrides.clock ?? Date.now;
  const holder = randomUUID();

  const notifier: RevisionNotifier =
    postgres && !overrides.store
      ? new PgNotifier({ url: settings.databaseUrl, source: store, log })
      : new InProcessNotifier(store);
  const follower = new LogFollower(store, notifier, { pollMs: settings.watchPollMs, clock, log });
  const hub = new WatchHub(store, follower, {
    bufferLimit: settings.watchBufferEvents,
    checkpointMs: settings.watchCheckpointMs,
    clock,
    log,
    ...(overrides.onFannedOut ? { onFannedOut: overrides.onFannedOut } : {}),
  });

  const useCases = createUseCases(
    {
      store,
      registrar,
      gsap,
      settings,
      log,
      clock,
      audit: {
        failClosed: settings.auditFailClosed,
        timeoutMs: settings.auditFailClosedTimeoutMs,
        ready: () => background.outbox.ready(settings.auditFailClosedTimeoutMs),
        waitDelivered: (revision, ms) => background.outbox.waitDelivered(revision, ms),
      },
    },
    overrides.onExpired ? { onExpired: overrides.onExpired } : {},
  );
  const background: Background = createBackground({
    store,
    useCases,
    registrar,
    gsap,
    sink,
    follower,
    holder,
    log,
    clock,
    reconcileIntervalMs: settings.reconcileIntervalMs,
    leaseTtlMs: settings.leaseTtlMs,
    contextCacheMs: settings.gsapChecks.contextCacheMs,
    ...(overrides.onEffectDone ? { onEffectDone: overrides.onEffectDone } : {}),
  });

  const impl = intercept(DelegationService, createDelegationService({ useCases, hub }), [
    errorMapping(log), // outermost: every failure below leaves as a safe ConnectError
    logging(log), // one debug line per call, with the code
    authentication(createAuthenticator(settings)), // the caller, for the limits, the handlers and the use cases
    limits(settings.limits, log), // per-principal rates, deadlines, watch streams
  ]);

  let server: RunningServer | undefined;
  try {
    await notifier.start();
    await follower.start();
    hub.start();
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
        "/healthz": async () => {
          const [revision, audit, work] = await Promise.all([store.headRevision(), background.outbox.health(), background.health()]);
          return {
            status: "ok",
            revision: revision.toString(),
            watchers: hub.subscriberCount,
            driver: store.driver,
            notifier: notifier.kind,
            registrar: registrar.backend,
            gsap: gsap.mode,
            audit: { driver: sink.mode, failClosed: settings.auditFailClosed, ...audit },
            consequences: work.consequences,
            loops: work.loops,
          };
        },
      },
    });
  } catch (err) {
    await hub.close();
    await follower.stop();
    await notifier.close();
    await store.close();
    throw err;
  }
  // Listening: now the background catches up with whatever the last run left.
  background.start();
  log.info({ grpcPort: server.grpcPort, webPort: server.webPort, driver: store.driver, registrar: registrar.backend }, "broker started");

  const running = server;
  let stopping: Promise<void> | undefined;
  const stop = async () => {
    // Streams first, with UNAVAILABLE and the revision to resume from; then the listeners.
    await hub.close();
    await running.close();
    await background.stop();
    await follower.stop();
    await notifier.close();
    await Promise.all([registrar.close(), gsap.close(), sink.close()]);
    await store.close();
  };
  return {
    grpcPort: running.grpcPort,
    webPort: running.webPort,
    useCases,
    hub,
    follower,
    notifier,
    store,
    background,
    drivers: { registrar: registrar.backend, gsap: gsap.mode, audit: sink.mode },
    /** Stops everything, in order; calling it again waits for the same stop. */
    stop() {
      stopping ??= stop();
      return stopping;
    },
  };
}
