/**
 * request_id idempotency, one helper for every mutation that takes one
 * (CreateDelegation, RevokeDelegation). A key is scoped to the caller and the
 * method; it records a hash of the request and, once there is one, the first
 * answer, written in the same transaction as the change it answers.
 */
import { createHash } from "node:crypto";
import { BrokerError } from "../domain/index.js";
import type { IdempotencyClaim, IdempotencyRecord, IdempotencyStore } from "../store/store.js";

/** The hash a key is bound to: the request after defaults and normalisation. */
export function hashRequest(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex");
}

/** A claim for `requestId` by `scope` on `method`, or undefined when the caller gave none. */
export function claimFor(scope: string, method: string, requestId: string, request: unknown, delegationId = ""): IdempotencyClaim | undefined {
  if (requestId === "") return undefined;
  return { scope, method, requestId, requestHash: hashRequest(request), delegationId };
}

/** The same request_id for a different request is ALREADY_EXISTS. */
export function assertSameRequest(claim: IdempotencyClaim, record: IdempotencyRecord): void {
  if (record.requestHash !== claim.requestHash) {
    throw new BrokerError("ALREADY_EXISTS", "REQUEST_ID_REUSED", "request_id was already used for a different request", {
      field: "request_id",
    });
  }
}

/** What an existing key means for a new request with the same id. */
export type Existing =
  /** The first request finished: answer what it answered. */
  | { kind: "replay"; response: string }
  /** The first request left no answer and is not running: its key is gone, start afresh. */
  | { kind: "released" };

/**
 * Settles a request whose key already exists: the same id for a different
 * request is ALREADY_EXISTS; a finished first request is replayed; one still
 * running (as `inFlight` tells) is ABORTED, retry later; anything else was
 * abandoned (failed, or interrupted by a crash) and its key is released.
 */
export async function settleExisting(
  store: IdempotencyStore,
  claim: IdempotencyClaim,
  record: IdempotencyRecord,
  inFlight: (record: IdempotencyRecord) => Promise<boolean>,
): Promise<Existing> {
  assertSameRequest(claim, record);
  if (record.response !== null) return { kind: "replay", response: record.response };
  if (await inFlight(record)) {
    throw new BrokerError("ABORTED", "REQUEST_IN_PROGRESS", "a request with this request_id is in progress; retry");
  }
  await store.releaseIdempotency(claim, { unanswered: true });
  return { kind: "released" };
}
