/**
 * The Chronicle audit driver (AUDIT_DRIVER=chronicle): delivers each lifecycle
 * event as the prototype's Forgejo push webhook. Deliveries are at-least-once
 * (the outbox repeats what it cannot confirm), so each carries its content id
 * in `X-Forgejo-Delivery` for Chronicle to de-duplicate, and repeating one is
 * harmless.
 *
 * Outcomes: any 2xx is durably recorded; 408, 429, 3xx, 5xx, timeouts and
 * refused connections are UpstreamErrors (try again later); any other 4xx is
 * a permanent rejection, CHRONICLE_REJECTED, for the outbox to decide about.
 */
import { BrokerError, UpstreamError } from "../../domain/index.js";
import type { DelegationEvent } from "../../domain/index.js";
import type { Logger } from "../../logging.js";
import { HttpClient } from "../http/http-client.js";
import type { AuditSink } from "./chronicle-client.js";
import { contentId, eventPayload, webhookBody } from "./chronicle-event.js";

export interface ChronicleSinkOptions {
  /** Where the webhook is POSTed (CHRONICLE_WEBHOOK_URL). */
  webhookUrl: string;
  /** The pusher of events that have no delegator DID (BROKER_DID). */
  brokerDid: string;
  /** By default, an HttpClient of its own named "chronicle". The sink owns it: close() closes it. */
  http?: HttpClient;
  /** By default, nothing is logged. */
  log?: Logger;
}

/** The longest piece of Chronicle's rejection text kept in the error. */
const MAX_DETAIL = 200;

/** Creates the Chronicle audit sink. */
export function createChronicleSink(options: ChronicleSinkOptions): AuditSink {
  const http = options.http ?? new HttpClient({ system: "chronicle" });
  const log = options.log;

  return {
    mode: "chronicle",

    async deliver(event: DelegationEvent, stored: string): Promise<void> {
      const payload = eventPayload(event);
      // A cid stored with the event (CREATED) that differs from the one computed here means
      // the outbox paired an event with another's id, and Chronicle would de-duplicate wrongly.
      const cid = contentId(payload);
      if (stored !== "" && stored !== cid) {
        throw new BrokerError("INTERNAL", "CHRONICLE_CID_MISMATCH", `event ${event.revision} has content id ${cid}, not ${stored}`, {
          metadata: { revision: event.revision.toString() },
        });
      }
      const res = await http.send({
        method: "POST",
        url: options.webhookUrl,
        headers: { "x-forgejo-event": "push", "x-forgejo-delivery": cid },
        json: webhookBody(payload, cid, options.brokerDid),
        // Chronicle de-duplicates by delivery id, so repeating after a 5xx or a timeout is safe.
        idempotent: true,
      });
      if (res.status >= 200 && res.status <= 299) {
        log?.debug({ system: "chronicle", cid, kind: payload.kind, revision: event.revision.toString() }, "audit event delivered");
        return;
      }
      // (A 429 never gets here: HttpClient repeats it, then throws an UpstreamError.)
      if (res.status >= 400 && res.status <= 499 && res.status !== 408) {
        const detail = res.text.replace(/[\u0000-\u001f\u007f]+/g, " ").trim().slice(0, MAX_DETAIL);
        log?.warn({ system: "chronicle", cid, status: res.status, detail }, "Chronicle rejected an audit event");
        throw new UpstreamError("chronicle", "rejected", `Chronicle rejected event ${cid} (${res.status})${detail ? `: ${detail}` : ""}`, {
          status: res.status,
          reason: "CHRONICLE_REJECTED",
          metadata: { cid },
        });
      }
      throw new UpstreamError("chronicle", "status", `chronicle answered ${res.status}`, { status: res.status });
    },

    async close() {
      await http.close();
    },
  };
}
