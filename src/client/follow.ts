/**
 * WatchDelegations that survives the connection: resumes from the last
 * revision after the stream ends or fails, with exponential backoff and full
 * jitter, and says when the caller must re-list instead (the revision was
 * pruned, or there is none to resume from).
 */
import { Code, type Client, ConnectError } from "@connectrpc/connect";
import type { DelegationEvent } from "../gen/llmbroker/v1/delegation_pb.js";
import type { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";

/** What a follower yields. */
export type FollowItem =
  /** A change, and the revision it brings the caller up to. */
  | { kind: "event"; revision: bigint; event: DelegationEvent }
  /** Up to date through `revision`; the first one after a `reset` is where a fresh listing stands. */
  | { kind: "checkpoint"; revision: bigint }
  /** The stream started (again) from "now": what is known may be stale; re-list at the next checkpoint. */
  | { kind: "reset" }
  /** The stream ended or failed; it is reopened from the last revision in `retryInMs`. */
  | { kind: "disconnected"; error: ConnectError | undefined; retryInMs: number };

export interface FollowOptions {
  /** Only events of this delegation. By default, every delegation the caller may see. */
  delegationId?: string;
  /** Only events of this delegator's delegations. */
  delegatorDid?: string;
  /** Resume after this revision. By default, 0: from now (the first item is a `reset`). */
  startRevision?: bigint;
  /** Stops following; the generator then returns. */
  signal?: AbortSignal;
  /** First retry delay. By default, 500 ms; doubled per failed attempt, up to maxBackoffMs. */
  minBackoffMs?: number;
  /** By default, 30 s. */
  maxBackoffMs?: number;
}

/** Codes a reconnect cannot fix: they end the follower with the error. */
const FATAL = new Set([Code.Unauthenticated, Code.PermissionDenied, Code.InvalidArgument, Code.NotFound, Code.Unimplemented]);

/**
 * Follows WatchDelegations until `signal` aborts. Throws (a ConnectError) only
 * for failures a retry cannot fix: unauthenticated, permission denied, a bad
 * request, or a delegation that is not there.
 */
export async function* followDelegations(client: Client<typeof DelegationService>, options: FollowOptions = {}): AsyncGenerator<FollowItem> {
  const { signal } = options;
  const minMs = options.minBackoffMs ?? 500;
  const maxMs = options.maxBackoffMs ?? 30_000;
  let revision = options.startRevision ?? 0n;
  let failures = 0;
  for (;;) {
    if (signal?.aborted) return;
    // Watching from 0 means "from now": whatever happened before is the caller's to re-list.
    if (revision === 0n) yield { kind: "reset" };
    let error: ConnectError | undefined;
    try {
      const stream = client.watchDelegations(
        { startRevision: revision, delegationId: options.delegationId ?? "", delegatorDid: options.delegatorDid ?? "" },
        signal ? { signal } : {},
      );
      for await (const m of stream) {
        failures = 0;
        revision = m.revision;
        if (m.kind.case === "event") yield { kind: "event", revision: m.revision, event: m.kind.value };
        else yield { kind: "checkpoint", revision: m.revision };
      }
    } catch (err) {
      if (signal?.aborted) return;
      error = ConnectError.from(err);
      if (FATAL.has(error.code)) throw error;
      // Pruned or ahead of the log: resuming cannot work; start from now and re-list.
      if (error.code === Code.OutOfRange) {
        revision = 0n;
        continue;
      }
    }
    if (signal?.aborted) return;
    const retryInMs = Math.round(Math.random() * Math.min(maxMs, minMs * 2 ** failures));
    failures++;
    yield { kind: "disconnected", error, retryInMs };
    await sleep(retryInMs, signal);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
