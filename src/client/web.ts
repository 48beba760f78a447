/**
 * The broker's client for browsers (package entry
 * `llm-principal-broker/client/web`): a typed DelegationService client over
 * Connect or gRPC-Web on the web port, through @connectrpc/connect-web
 * (fetch). Imports no Node module; the page's origin must be the broker's or
 * one of its CORS_ORIGINS.
 */
import type { Interceptor } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";
import { type BrokerCredentials, credentialsInterceptor } from "./credentials.js";
import type { BrokerClient } from "./shared.js";

export * from "./shared.js";

export interface WebBrokerClientOptions extends BrokerCredentials {
  /** The broker's web port, e.g. `https://broker.example.com` or the page's own `location.origin`. */
  baseUrl: string;
  /** The protocol. By default, "connect". (Browsers cannot speak gRPC over HTTP/2 directly.) */
  transport?: "connect" | "grpc-web";
  /** Protobuf binary on the wire (JSON when false; Connect only). By default, true. */
  useBinaryFormat?: boolean;
  /** Further interceptors, run after the credentials one. */
  interceptors?: Interceptor[];
  /** The fetch to use. By default, globalThis.fetch. */
  fetch?: typeof globalThis.fetch;
}

/** A DelegationService client for the browser. */
export function createBrokerClient(options: WebBrokerClientOptions): BrokerClient {
  const transportOptions = {
    baseUrl: options.baseUrl,
    interceptors: [credentialsInterceptor(options), ...(options.interceptors ?? [])],
    useBinaryFormat: options.useBinaryFormat ?? true,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  };
  switch (options.transport ?? "connect") {
    case "connect":
      return createClient(DelegationService, createConnectTransport(transportOptions));
    case "grpc-web":
      return createClient(DelegationService, createGrpcWebTransport(transportOptions));
    default:
      throw new TypeError(`unknown transport "${String(options.transport)}": connect or grpc-web`);
  }
}
