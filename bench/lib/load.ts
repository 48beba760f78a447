/**
 * What every load generator is told and what it reports, so the runner can
 * treat h2load and the Node generator alike.
 */

/** The baseline's one method (bench/servers/echo.ts). */
export const ECHO_PATH = "/bench.v1.EchoService/Echo";

/** The command budget the broker under test allows, so AuthorizeCommand never runs out. */
export const BENCH_MAX_COMMANDS = 10_000_000;

export type Protocol = "grpc" | "connect";

export interface LoadSpec {
  protocol: Protocol;
  host: string;
  port: number;
  /** The RPC path, e.g. /llmbroker.v1.DelegationService/GetDelegation. */
  path: string;
  /** The serialized request message (no gRPC frame prefix). */
  body: Uint8Array;
  /** Extra request headers (auth). */
  headers: Record<string, string>;
  /** Requests in flight at once. */
  concurrency: number;
  /** HTTP/2 connections the in-flight requests are spread over (gRPC only; HTTP/1.1 uses one per request). */
  connections: number;
  durationS: number;
}

export interface LoadResult {
  loadgen: "h2load" | "node";
  /** Requests that completed with a success status (HTTP 200 for h2load, gRPC OK / HTTP 200 for node). */
  ok: number;
  /** Requests that failed or were refused. */
  errors: number;
  /** Wall time of the measured window. */
  elapsedS: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
  /** Response payload bytes received (h2load: DATA frames; node: not measured). */
  dataBytes?: number;
  /** The first error seen, to explain a non-zero `errors`. */
  firstError?: string;
}

/** The 5-byte gRPC length prefix (uncompressed) followed by the message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/** Request headers for one protocol, auth headers included. */
export function protocolHeaders(protocol: Protocol, extra: Record<string, string>): Record<string, string> {
  const base: Record<string, string> =
    protocol === "grpc"
      ? { "content-type": "application/grpc", te: "trailers" }
      : { "content-type": "application/proto", "connect-protocol-version": "1" };
  return { ...base, ...extra };
}
