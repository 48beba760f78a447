/**
 * Builds the audit sink settings select: chronicle (the real audit log) or
 * log (dev). loadSettings has resolved AUDIT_DRIVER=auto (chronicle when
 * CHRONICLE_WEBHOOK_URL is set, log otherwise).
 */
import type { Settings } from "../../config/settings.js";
import type { Logger } from "../../logging.js";
import type { AuditSink } from "./chronicle-client.js";
import { HttpClient, httpOptionsFrom } from "../http/http-client.js";
import { createChronicleSink } from "./chronicle-sink.js";
import { createLogAuditSink } from "./log-audit-sink.js";

/** Builds the audit sink the settings select. */
export function createAuditSink(settings: Settings, log: Logger): AuditSink {
  switch (settings.auditDriver) {
    case "log":
      return createLogAuditSink(log);
    case "chronicle":
      return createChronicleSink({
        webhookUrl: settings.chronicle.webhookUrl,
        brokerDid: settings.brokerDid,
        http: new HttpClient({ system: "chronicle", ...httpOptionsFrom(settings.http) }),
        log,
      });
  }
}
