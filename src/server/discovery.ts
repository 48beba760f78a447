/**
 * Health and discovery, wired for the composition root: one health monitor
 * (health.ts) behind `grpc.health.v1.Health` (health-service.ts) and server
 * reflection (reflection.ts) on the gRPC port, and `/livez` and `/readyz`
 * (probes.ts) on the web port. None of them authenticates: they reveal
 * statuses and the public contract, nothing else.
 */
import { readFileSync } from "node:fs";
import type * as grpc from "@grpc/grpc-js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";
import type { Logger } from "../logging.js";
import type { WebRoute } from "./create-server.js";
import { type BackgroundView, HealthMonitor, type HealthOptions } from "./health.js";
import { addHealthService } from "./health-service.js";
import { type ProbeInfo, probeRoutes } from "./probes.js";
import { addReflectionServices } from "./reflection.js";

export interface DiscoveryOptions {
  settings: { grpcReflection: boolean; auditFailClosed: boolean };
  store: { readonly driver: string; headRevision(): Promise<unknown> };
  background: BackgroundView;
  /** The drivers in use (auto resolved). */
  drivers: { registrar: string; gsap: string; audit: string };
  log?: Logger;
  /** Report ages and timeouts. By default, those of HealthMonitor. */
  health?: Omit<HealthOptions, "log">;
}

export interface Discovery {
  monitor: HealthMonitor;
  /** For startServer's `grpcServices`: adds health, and reflection unless GRPC_REFLECTION=false. */
  grpcServices(server: grpc.Server): void;
  /** For startServer's `routes`. */
  routes: Record<string, WebRoute>;
  /** Shutdown starts: every status becomes NOT_SERVING, /readyz 503, health watches end. Call it first. */
  close(): void;
}

/** The package's version (package.json, two levels up from src/server and dist/server). */
export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string }).version ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** Builds health and discovery for one broker; nothing runs until a probe or a watch asks. */
export function createDiscovery(o: DiscoveryOptions): Discovery {
  const monitor = new HealthMonitor(
    { store: o.store, background: o.background, failClosed: o.settings.auditFailClosed },
    { ...o.health, ...(o.log ? { log: o.log } : {}) },
  );
  const info: ProbeInfo = {
    version: packageVersion(),
    startTime: Date.now(),
    drivers: { store: o.store.driver, ...o.drivers },
    failClosed: o.settings.auditFailClosed,
  };
  return {
    monitor,
    grpcServices(server) {
      addHealthService(server, monitor);
      if (o.settings.grpcReflection) addReflectionServices(server, [DelegationService, Health]);
    },
    routes: probeRoutes(monitor, info),
    close: () => monitor.close(),
  };
}
