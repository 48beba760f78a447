/**
 * The fan-out baseline: a bare @grpc/grpc-js server that holds every
 * WatchDelegations stream it is sent (no broker code: no authentication,
 * store, hub or protobuf) and, when told, writes one message of an event's
 * size to all of them through grpc-js's public API. What the broker's
 * fan-out costs is then a ratio to this, measured in the same run.
 *
 * IPC: {type: "fire"} -> writes to every stream -> {type: "fired", at}; stats as the broker child.
 */
import * as grpc from "@grpc/grpc-js";
import { serveUntilStopped } from "../lib/server-process.js";

const streams: grpc.ServerWritableStream<Buffer, Buffer>[] = [];
// A checkpoint-sized first message, then event-sized ones (the broker's REVOKED event is ~600 bytes).
const CHECKPOINT = Buffer.from([8, 1, 26, 0]);
const EVENT = Buffer.alloc(640, 1);
const identity = (b: Buffer) => b;
const server = new grpc.Server({
  "grpc.max_concurrent_streams": Number(process.env.LIMIT_MAX_CONCURRENT_STREAMS ?? 100),
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
});
server.addService(
  {
    watch: {
      path: "/llmbroker.v1.DelegationService/WatchDelegations",
      requestStream: false,
      responseStream: true,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  },
  {
    watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      streams.push(call);
      call.on("cancelled", () => streams.splice(streams.indexOf(call), 1));
      call.write(CHECKPOINT);
    },
  },
);
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
);

process.on("message", (m: { type?: string }) => {
  if (m?.type === "fire") {
    const at = performance.timeOrigin + performance.now();
    for (const s of streams) s.write(EVENT);
    process.send!({ type: "fired", at, wroteAt: performance.timeOrigin + performance.now() });
  } else if (m?.type === "stats") {
    (globalThis as { gc?: () => void }).gc?.();
    const mem = process.memoryUsage();
    process.send!({ type: "stats", memory: { rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external }, fanOuts: [] });
  }
});

serveUntilStopped({ type: "ready", grpcPort: port }, async () => {
  server.forceShutdown();
});
