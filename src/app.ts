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
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import { type Background, createBackground } from "./background.js";
import type { AuditSink } from "./clients/chronicle/chronicle-client.js";
import { eventContentId } from "./clients/chronicle/chronicle-event.js";
import { createAuditSink } from "./clients/chronicle/factory.js";
import { createGsap } from "./clients/gsap/factory.js";
import type { GsapClient } from "./clients/gsap/gsap-client.js";
import { withHttpDefaults } from "./clients/http/http-client.js";
import type { Settings } from "./config/settings.js";
import { type UseCases, createUseCases } from "./delegation/use-cases.js";
import type { EffectKind } from "./domain/index.js";
import { LogFollower } from "./events/log-follower.js";
import { InProcessNotifier, type RevisionNotifier } from "./events/notifier.js";
import { NOTIFY_CHANNEL, PgNotifier } from "./events/pg-notifier.js";
import { DelegationReadModel } from "./events/read-model.js";
import { WatchHub } from "./events/watch-hub.js";
import { DelegationService } from "./gen/llmbroker/v1/delegation_service_pb.js";
import { type Logger, createLogger } from "./logging.js";
import { startObservability } from "./observability/index.js";
import type { AgentRegistrar } from "./registrars/registrar.js";
import { createRegistrar } from "./registrars/factory.js";
import { createAuthenticator } from "./server/authenticator.js";
import { type RunningServer, startServer } from "./server/create-server.js";
import { dashboardRoutes } from "./server/dashboard.js";
import { createDelegationService } from "./server/delegation-service.js";
import { createDiscovery } from "./server/discovery.js";
import { authentication, errorMapping, intercept, observe } from "./server/interceptors.js";
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
  /** Export spans here (tests: an InMemorySpanExporter), with or without an OTLP endpoint. */
  spanExporter?: SpanExporter;
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
  // Metrics, tracing and call context (src/observability); the gauges read what is built below, when scraped.
  const obs = await startObservability(settings, {
    log,
    ...(overrides.clock ? { clock: overrides.clock } : {}),
    spanExporter: overrides.spanExporter,
    sources: {
      countActive: async () => (await store.list({ state: "ACTIVE", limit: 0 })).total,
      watchers: () => hub.subscriberCount,
      audit: () => background.outbox.health(),
      effects: async () => (await background.health()).consequences,
    },
  });
  // The drivers' HTTP clients get client spans, traceparent and upstream metrics, and are abandoned when the shutdown grace ends.
  const abandonUpstream = new AbortController();
  const { registrar, gsap, sink } = withHttpDefaults({ instrumentation: obs.http, abandon: abandonUpstream.signal }, () => ({
    registrar: overrides.registrar ?? createRegistrar(settings, log),
    gsap: overrides.gsap ?? createGsap(settings, log),
    sink: overrides.audit ?? createAuditSink(settings, log),
  }));
  const postgres = parseDatabaseUrl(settings.databaseUrl).provider === "postgresql";
  const store =
    overrides.store ??
    (await openStore(settings.databaseUrl, { contentId: eventContentId, ...(postgres ? { notifyChannel: NOTIFY_CHANNEL } : {}) }));
  const clock = overrides.clock ?? Date.now;
  const holder = randomUUID();

  // What a commit sets going (the follower, the loops) runs outside the committing call's context.
  const commits = obs.detachedCommits(store);
  const notifier: RevisionNotifier =
    postgres && !overrides.store
      ? new PgNotifier({ url: settings.databaseUrl, source: commits, log })
      : new InProcessNotifier(commits);
  const follower = new LogFollower(store, notifier, { pollMs: settings.watchPollMs, clock, log });
  if (obs.metrics) follower.add(obs.metrics.onEvents);
  const hub = new WatchHub(store, follower, {
    bufferLimit: settings.watchBufferEvents,
    checkpointMs: settings.watchCheckpointMs,
    clock,
    log,
    ...(overrides.onFannedOut ? { onFannedOut: overrides.onFannedOut } : {}),
  });

  // GetDelegation from memory: misses read the (traced) store; every applied event drops what it changed.
  const traced = obs.traced(store);
  const reads = new DelegationReadModel({ get: (id) => traced.get(id), onCommit: (l) => store.onCommit(l) }, { maxAgeMs: settings.readModelMaxAgeMs, clock });
  follower.add(reads.apply);

  const useCases = createUseCases(
    {
      store: traced,
      reads,
      registrar,
      gsap,
      settings,
      log: obs.callLog(log),
      clock,
      audit: {
        failClosed: settings.auditFailClosed,
        timeoutMs: settings.auditFailClosedTimeoutMs,
        ready: obs.detached(() => background.outbox.ready(settings.auditFailClosedTimeoutMs)),
        waitDelivered: obs.detached((revision: bigint, ms: number) => background.outbox.waitDelivered(revision, ms)),
      },
    },
    // A batch is at most what is due, so its limit matters only when expiry is behind. PostgreSQL: up to
    // 2,000 per transaction (its fixed cost per transaction, ~15 ms, kept 500-row batches behind 10,000
    // expiries a second); SQLite keeps 500, since its transaction holds the event loop.
    { onExpired: obs.onExpired(overrides.onExpired), ...(store.driver === "postgresql" ? { expiryBatch: 2000 } : {}) },
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
    onEffectDone: obs.onEffectDone(overrides.onEffectDone),
  });

  // Health (grpc.health.v1, /livez, /readyz) and reflection: unauthenticated, outside the interceptors.
  const discovery = createDiscovery({
    settings,
    store,
    background,
    drivers: { registrar: registrar.backend, gsap: gsap.mode, audit: sink.mode },
    log,
  });

  const impl = intercept(DelegationService, createDelegationService({ useCases, hub }), [
    observe(obs.calls), // outermost: request id, metrics, span and access-log line of every call, with the code the caller gets
    errorMapping(log), // every failure below leaves as a safe ConnectError
    authentication(createAuthenticator(settings)), // the caller, for the limits, the handlers and the use cases
    limits(settings.limits, log, { onRefusal: obs.metrics?.limitRefused }), // per-principal rates, deadlines, watch streams
  ]);

  let server: RunningServer | undefined;
  try {
    await notifier.start();
    await follower.start();
    reads.startAt(follower.revision);
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
      grpcServices: discovery.grpcServices,
      routes: {
        ...discovery.routes,
        ...obs.routes,
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
        ...(settings.dashboardEnabled ? await dashboardRoutes({ onMissing: (m) => log.warn(m) }) : {}),
      },
    });
  } catch (err) {
    await hub.close();
    await follower.stop();
    await notifier.close();
    await store.close();
    await obs.shutdown();
    throw err;
  }
  // Listening: now the background catches up with whatever the last run left.
  background.start();
  log.info({ grpcPort: server.grpcPort, webPort: server.webPort, driver: store.driver, registrar: registrar.backend }, "broker started");

  const running = server;
  let stopping: Promise<void> | undefined;
  const stop = async () => {
    // Health says NOT_SERVING and its watches end; then streams, with UNAVAILABLE and the revision to resume from; then the listeners.
    discovery.close();
    const started = Date.now();
    log.info({ graceMs: settings.shutdownGraceMs }, "shutting down: no new calls; calls in flight may finish");
    await hub.close();
    // Past the grace nothing waits on an upstream: calls in flight and retries are abandoned (their work stays stored for the next run).
    const graceOver = setTimeout(() => abandonUpstream.abort(), settings.shutdownGraceMs);
    const { cutShort } = await running.close(settings.shutdownGraceMs);
    if (cutShort > 0) log.warn({ cutShort }, "shutdown grace over: calls still running were answered UNAVAILABLE");
    await background.stop();
    clearTimeout(graceOver);
    abandonUpstream.abort();
    await follower.stop();
    await notifier.close();
    await Promise.all([registrar.close(), gsap.close(), sink.close()]);
    await store.close();
    await obs.shutdown(); // the spans still buffered
    log.info({ ms: Date.now() - started }, "stopped");
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
