/**
 * The baseline: a bare @grpc/grpc-js server whose one unary method returns the
 * request bytes unchanged (no protobuf, no interceptors, no store). It uses
 * the broker's gRPC server options so that only the handler differs.
 */
import * as grpc from "@grpc/grpc-js";
import { ECHO_PATH } from "../lib/load.js";
import { serveUntilStopped } from "../lib/server-process.js";

const same = (b: Buffer) => b;

const server = new grpc.Server({
  "grpc.max_receive_message_length": 1024 * 1024,
  "grpc.max_concurrent_streams": 1000,
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.keepalive_permit_without_calls": 1,
});
server.addService(
  {
    echo: {
      path: ECHO_PATH,
      requestStream: false,
      responseStream: false,
      requestSerialize: same,
      requestDeserialize: same,
      responseSerialize: same,
      responseDeserialize: same,
    },
  },
  {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
  },
);

const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
);

serveUntilStopped(
  { type: "ready", grpcPort: port },
  () =>
    new Promise<void>((resolve) => {
      const force = setTimeout(() => server.forceShutdown(), 5000);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    }),
);
