/**
 * The dev-mode audit driver (AUDIT_DRIVER=log): writes each lifecycle event
 * to the service log with the Chronicle event code it would carry. It reads
 * the same event log as Watch, from the moment the broker starts.
 */
import type { DelegationEvent } from "../../delegation/model.js";
import { CHRONICLE_CODES } from "./chronicle-event.js";
import type { WatchHub } from "../../events/watch-hub.js";
import type { Logger } from "../../logging.js";


/** Follows the hub until `signal` aborts. */
export async function runLogAuditSink(hub: WatchHub, log: Logger, signal: AbortSignal): Promise<void> {
  const line = (e: DelegationEvent) => ({
    audit: true,
    code: CHRONICLE_CODES[e.type],
    kind: `DELEGATION_${e.type}`,
    revision: e.revision.toString(),
    delegationId: e.delegation.id,
    delegator: e.delegation.delegatorDid,
    agent: e.delegation.agentDid,
    reason: e.reason,
  });
  try {
    for await (const item of hub.watch(0n, {}, signal)) {
      if (item.kind === "event") log.info(line(item.event), "audit event");
    }
  } catch (err) {
    if (!signal.aborted) log.error({ err }, "audit log sink stopped");
  }
}
