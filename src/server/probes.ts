/**
 * Kubernetes-style probes on the web port, GET and HEAD (`/healthz` stays
 * the detailed document it was):
 *
 * - `/livez`: 200 as long as the process answers, whatever its
 *   dependencies (restarting a broker does not bring a database back). The
 *   body carries the last report without waiting for a new one.
 * - `/readyz`: 200 when the broker can do all its work, 503 when it cannot:
 *   the store does not answer (unreachable, not migrated), fail-closed audit
 *   is refusing creates, or it is shutting down.
 *
 * Both bodies: version, start time and uptime, each dependency's status and
 * driver, the work waiting for the IdP and GSAP, and the audit outbox's
 * backlog. No error text, address or credential: probes are unauthenticated.
 */
import type * as http from "node:http";
import type { WebRoute } from "./create-server.js";
import type { HealthMonitor, HealthReport } from "./health.js";

export interface ProbeInfo {
  /** The package version. */
  version: string;
  /** When the broker started (ms since the epoch). */
  startTime: number;
  /** The drivers in use, as /healthz names them. */
  drivers: { store: string; registrar: string; gsap: string; audit: string };
  failClosed: boolean;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The JSON document of both probes. */
export function probeDocument(status: string, info: ProbeInfo, r: HealthReport | undefined, now = Date.now()) {
  return {
    status,
    version: info.version,
    startTime: iso(info.startTime),
    uptimeSeconds: Math.max(0, Math.round((now - info.startTime) / 100) / 10),
    checkTime: r ? iso(r.time) : null,
    dependencies: r
      ? {
          store: { status: r.dependencies.store, driver: info.drivers.store },
          idp: { status: r.dependencies.idp, driver: info.drivers.registrar, pending: r.pending.idp },
          gsap: { status: r.dependencies.gsap, driver: info.drivers.gsap, pending: r.pending.gsap },
          audit: { status: r.dependencies.audit, driver: info.drivers.audit, failClosed: info.failClosed, refusingCreates: r.refusingCreates },
        }
      : null,
    outbox: r?.outbox ? { ...r.outbox, oldestPendingTime: iso(r.outbox.oldestPendingTime) } : null,
  };
}

/** Why a report is not ready, in words an operator can act on. */
function reasons(r: HealthReport, closed: boolean): string[] {
  const why: string[] = [];
  if (closed) why.push("shutting down");
  else if (!r.serving) why.push("store: unreachable or not migrated");
  if (r.refusingCreates) why.push("audit: fail-closed and delivery is failing, so creates are refused");
  return why;
}

function send(req: http.IncomingMessage, res: http.ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
  res.end(req.method === "HEAD" ? undefined : text);
}

/** GET and HEAD only. */
function probe(answer: (req: http.IncomingMessage, res: http.ServerResponse) => void): WebRoute {
  return {
    handle(req, res) {
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { allow: "GET, HEAD" }).end();
        return;
      }
      answer(req, res);
    },
  };
}

/** The `/livez` and `/readyz` routes, answering from `monitor`. */
export function probeRoutes(monitor: HealthMonitor, info: ProbeInfo): Record<"/livez" | "/readyz", WebRoute> {
  return {
    "/livez": probe((req, res) => {
      // Answering proves the event loop runs; the dependencies are the last report's, refreshed for next time.
      void monitor.report();
      send(req, res, 200, probeDocument("alive", info, monitor.last));
    }),
    "/readyz": probe((req, res) => {
      void monitor.report().then((r) => {
        const ready = r.ready && !monitor.closed;
        const doc = probeDocument(ready ? "ready" : "not_ready", info, r);
        send(req, res, ready ? 200 : 503, ready ? doc : { ...doc, reasons: reasons(r, monitor.closed) });
      });
    }),
  };
}
