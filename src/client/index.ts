/**
 * The broker's client for Node (package entry `llm-principal-broker/client`):
 * a typed DelegationService client over Connect or gRPC-Web on the web port,
 * or gRPC on the gRPC port, through @connectrpc/connect-node. Browsers use
 * `llm-principal-broker/client/web`, which exports the same things.
 */
import type { Interceptor } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type * as http2 from "node:http2";
import type * as https from "node:https";
import { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";
import { type BrokerCredentials, credentialsInterceptor } from "./credentials.js";
import type { BrokerClient } from "./shared.js";

export * from "./shared.js";

export interface BrokerClientOptions extends BrokerCredentials {
  /**
   * Where the broker listens: the web port (`http://127.0.0.1:8093`) for
   * "connect" and "grpc-web", the gRPC port (`http://127.0.0.1:8092`) for "grpc".
   */
  baseUrl: string;
  /** The protocol. By default, "connect". */
  transport?: "connect" | "grpc-web" | "grpc";
  /** Protobuf binary on the wire (JSON when false; Connect only). By default, true. */
  useBinaryFormat?: boolean;
  /** Further interceptors, run after the credentials one. */
  interceptors?: Interceptor[];
  /**
   * TLS options (AUTH_MODE=mtls: `ca`, `cert`, `key`), handed to Node's
   * https (Connect, gRPC-Web) or http2 (gRPC) client. By default, none.
   */
  nodeOptions?: https.RequestOptions & http2.SecureClientSessionOptions;
}

/** A DelegationService client for Node. */
export function createBrokerClient(options: BrokerClientOptions): BrokerClient {
  const interceptors = [credentialsInterceptor(options), ...(options.interceptors ?? [])];
  const common = {
    baseUrl: options.baseUrl,
    interceptors,
    useBinaryFormat: options.useBinaryFormat ?? true,
  };
  const nodeOptions = options.nodeOptions;
  switch (options.transport ?? "connect") {
    case "connect":
      // The web port speaks HTTP/1.1 only.
      return createClient(DelegationService, createConnectTransport({ ...common, httpVersion: "1.1", ...(nodeOptions ? { nodeOptions } : {}) }));
    case "grpc-web":
      return createClient(DelegationService, createGrpcWebTransport({ ...common, httpVersion: "1.1", ...(nodeOptions ? { nodeOptions } : {}) }));
    case "grpc":
      return createClient(DelegationService, createGrpcTransport({ ...common, ...(nodeOptions ? { nodeOptions } : {}) }));
    default:
      throw new TypeError(`unknown transport "${String(options.transport)}": connect, grpc-web or grpc`);
  }
}
