/**
 * The baseline of the Connect rows: a bare @connectrpc/connect-node server
 * (connectNodeAdapter on node:http, HTTP/1.1) with one unary method that
 * returns its request. No interceptors, no CORS, no store, no broker code.
 *
 * Its message is the broker's own GetDelegationRequest (one string field),
 * echoed back: the connect-get target sends the same ~32 bytes, so the
 * baseline decodes and encodes a message of the size the broker decodes
 * (the broker then answers a larger Delegation, which is part of its cost).
 * The service, `bench.v1.EchoService`, is described at run time from a
 * FileDescriptorProto (no generated code), with the method at ECHO_PATH.
 *
 * The adapter and the HTTP server get what the broker's web port gives them
 * (src/server/create-server.ts): readMaxBytes at the broker's default request
 * limit, a shutdown signal every call links to, keepAliveTimeout 65 s.
 */
import { setMaxListeners } from "node:events";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { createFileRegistry, create } from "@bufbuild/protobuf";
import type { GenService } from "@bufbuild/protobuf/codegenv2";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { GetDelegationRequestSchema, file_llmbroker_v1_delegation } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ECHO_PATH } from "../lib/load.js";
import { serveUntilStopped } from "../lib/server-process.js";

/** The broker's default LIMIT_MAX_REQUEST_BYTES, which it passes to connect-node as readMaxBytes. */
const READ_MAX_BYTES = 262_144;

const [, pkgService, methodName] = /^\/(.+)\/([^/]+)$/.exec(ECHO_PATH)!;
const dot = pkgService!.lastIndexOf(".");
const file = create(FileDescriptorProtoSchema, {
  name: "bench/v1/connect_echo.proto",
  package: pkgService!.slice(0, dot),
  syntax: "proto3",
  dependency: [file_llmbroker_v1_delegation.proto.name],
  service: [
    {
      name: pkgService!.slice(dot + 1),
      method: [
        {
          name: methodName!,
          inputType: `.${GetDelegationRequestSchema.typeName}`,
          outputType: `.${GetDelegationRequestSchema.typeName}`,
        },
      ],
    },
  ],
});
const registry = createFileRegistry(file, (name) => (name === file_llmbroker_v1_delegation.proto.name ? file_llmbroker_v1_delegation : undefined));
const EchoService = registry.getService(pkgService!) as GenService<{
  echo: { methodKind: "unary"; input: typeof GetDelegationRequestSchema; output: typeof GetDelegationRequestSchema };
}>;
if (!EchoService) throw new Error(`could not describe ${pkgService}`);

const shutdown = new AbortController();
setMaxListeners(0, shutdown.signal);
const connect = connectNodeAdapter({
  routes: (router) => router.service(EchoService, { echo: (req) => req }),
  readMaxBytes: READ_MAX_BYTES,
  shutdownSignal: shutdown.signal,
});
const web = http.createServer(connect);
web.keepAliveTimeout = 65_000;
await new Promise<void>((resolve, reject) => {
  web.once("error", reject);
  web.listen(0, "127.0.0.1", () => resolve());
});
const port = (web.address() as AddressInfo).port;

serveUntilStopped(
  // No gRPC port: this server only speaks HTTP/1.1 (webPort); grpcPort is 0.
  { type: "ready", grpcPort: 0, webPort: port },
  () =>
    new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        shutdown.abort();
        web.closeAllConnections();
      }, 5000);
      web.close(() => {
        clearTimeout(force);
        resolve();
      });
      web.closeIdleConnections();
    }),
);
