/**
 * The request id of a call, and the log lines written while it runs.
 *
 * Every RPC has a request id: the caller's `x-request-id` when it is sane
 * (1–128 characters of letters, digits and `. _ : / + = @ -`), otherwise a
 * new one (16 characters of base64url, 96 random bits). It is echoed in the
 * response headers and written on the access log line and on every line the
 * transport layer writes for the call.
 *
 * The use cases log through the broker's logger, not through the call. When
 * calls run inside an async context (tracing is on, or LOG_REQUEST_CONTEXT),
 * `callContextLogger` adds the request id (and the trace id) of the call in
 * progress to their lines too. Without that context nothing is tracked per
 * call: async context tracking costs every promise of every call (measured
 * at about 8% of the CPU of a GetDelegation).
 */
import { randomFillSync } from "node:crypto";
import { type Context, context, createContextKey, trace } from "@opentelemetry/api";
import type { Logger } from "../logging.js";

/** The header a request id comes in and goes out in. */
export const REQUEST_ID_HEADER = "x-request-id";

const SANE_REQUEST_ID = /^[A-Za-z0-9._:/+=@-]{1,128}$/;

/** The caller's request id when it is sane, else a new one. */
export function requestIdFrom(given: string | null | undefined): string {
  return given != null && SANE_REQUEST_ID.test(given) ? given : newRequestId();
}

// Random bytes for 256 ids at a time: one call into the CSPRNG instead of one per request.
const ID_BYTES = 12;
const pool = Buffer.allocUnsafe(ID_BYTES * 256);
let poolOffset = pool.length;

/** A new request id: 96 random bits as 16 base64url characters. */
export function newRequestId(): string {
  if (poolOffset === pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const id = pool.toString("base64url", poolOffset, poolOffset + ID_BYTES);
  poolOffset += ID_BYTES;
  return id;
}

/** What a call puts into its async context for the lines written during it. */
export interface CallInfo {
  requestId: string;
}

const CALL_KEY = createContextKey("llm-broker call");

/** `parent` with the call's information. */
export function withCall(parent: Context, call: CallInfo): Context {
  return parent.setValue(CALL_KEY, call);
}

/** The call in progress, when calls run inside an async context. */
export function currentCall(): CallInfo | undefined {
  return context.active().getValue(CALL_KEY) as CallInfo | undefined;
}

const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"] as const;

/**
 * `base`, except that a line written during a call carries the call's
 * `requestId` (and `traceId` when it is traced). Outside a call, and when no
 * async context is active, a line is written exactly as `base` writes it.
 */
export function callContextLogger(base: Logger): Logger {
  const wrapped = Object.create(base) as Logger;
  for (const level of LEVELS) {
    // Looked up at each line: pino swaps a level's method when the level changes.
    const write = (...args: unknown[]) => (base[level] as (...a: unknown[]) => void).apply(base, args);
    Object.defineProperty(wrapped, level, {
      value: (...args: unknown[]) => {
        const active = context.active();
        const call = active.getValue(CALL_KEY) as CallInfo | undefined;
        if (call === undefined || !base.isLevelEnabled(level)) return write(...args);
        const traceId = trace.getSpan(active)?.spanContext().traceId;
        const fields: Record<string, unknown> = traceId ? { requestId: call.requestId, traceId } : { requestId: call.requestId };
        const [first, ...rest] = args;
        if (first instanceof Error) return write({ ...fields, err: first }, ...rest);
        if (typeof first === "object" && first !== null) return write({ ...fields, ...first }, ...rest);
        return write(fields, ...args);
      },
    });
  }
  // A child keeps its own bindings and still picks up the call's.
  Object.defineProperty(wrapped, "child", {
    value: (bindings: Record<string, unknown>, options?: object) => callContextLogger(base.child(bindings, options)),
  });
  return wrapped;
}
