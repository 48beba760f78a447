/** Reads a grpc-js WatchDelegations stream in tests. */
import type { ClientReadableStream } from "@grpc/grpc-js";
import type { WatchDelegationsResponse } from "../../src/gen/llmbroker/v1/delegation_pb.js";

export interface Collected {
  messages: WatchDelegationsResponse[];
  /** The stream's error, if it ended with one. */
  error?: Error & { code?: number };
}

/**
 * Collects messages until `done(messages)` holds, the stream ends, or
 * `timeoutMs` passes (then it rejects, naming what it had). Cancels the call.
 */
export function collect(
  stream: ClientReadableStream<WatchDelegationsResponse>,
  done: (messages: WatchDelegationsResponse[]) => boolean,
  timeoutMs = 15_000,
): Promise<Collected> {
  const messages: WatchDelegationsResponse[] = [];
  return new Promise((resolve, reject) => {
    const finish = (error?: Error) => {
      clearTimeout(timer);
      stream.removeAllListeners();
      stream.on("error", () => {});
      stream.cancel();
      resolve(error ? { messages, error } : { messages });
    };
    const timer = setTimeout(() => {
      stream.removeAllListeners();
      stream.on("error", () => {});
      stream.cancel();
      reject(new Error(`watch timed out after ${messages.length} messages: ${messages.map((m) => `${m.revision}:${m.kind.case}`).join(",")}`));
    }, timeoutMs);
    stream.on("data", (m: WatchDelegationsResponse) => {
      messages.push(m);
      if (done(messages)) finish();
    });
    stream.on("error", (e: Error & { code?: number }) => {
      if (e.code === 1) return; // our own cancel
      finish(e);
    });
    stream.on("end", () => finish());
  });
}

/** Only the event messages. */
export function events(messages: WatchDelegationsResponse[]) {
  return messages.flatMap((m) => (m.kind.case === "event" ? [{ revision: m.revision, ...m.kind.value }] : []));
}
