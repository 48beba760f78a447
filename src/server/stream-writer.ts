/**
 * A transport's server stream, offered to the handler so a long-lived stream
 * (WatchDelegations) can write live messages directly instead of yielding
 * each through the handler's generator chain. The grpc-js adapter offers
 * one; connect-node does not (its handlers then yield as usual).
 */
import { createContextKey } from "@connectrpc/connect";

export interface StreamWriter {
  /** Writes one response message; false when the transport's buffer is full. */
  write(message: unknown): boolean;
  /** Calls `resume` once, when the buffer has drained. */
  onDrain(resume: () => void): void;
}

export const streamWriterKey = createContextKey<StreamWriter | undefined>(undefined, { description: "direct stream writer" });
