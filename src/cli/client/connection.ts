/**
 * How a client verb reaches the broker: Connect's gRPC transport over
 * HTTP/2 to the gRPC port (h2c, or TLS with client certificates for
 * AUTH_MODE=mtls), with the caller's credentials as request headers.
 * Connect's transport turns every failure, including a refused connection,
 * into a ConnectError with a gRPC code, which errors.ts prints.
 */
import { readFileSync } from "node:fs";
import { type CallOptions, type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DelegationService } from "../../gen/llmbroker/v1/delegation_service_pb.js";
import { UsageError } from "../usage-error.js";

/** The broker's default gRPC port (LLM_BROKER_PORT). */
export const DEFAULT_PORT = 8092;
export const DEFAULT_ADDR = `127.0.0.1:${DEFAULT_PORT}`;

/** What the connection options of every client verb hold (flags, else environment). */
export interface ConnectionOptions {
  addr?: string;
  token?: string;
  as?: string;
  cert?: string;
  key?: string;
  ca?: string;
  /** Deadline of a unary call, in milliseconds. */
  timeout?: number;
}

export interface Connection {
  client: Client<typeof DelegationService>;
  /** The address as the user gave it, for messages. */
  target: string;
  /** Options of a unary call: its deadline. */
  unary: CallOptions;
}

/** Where to connect: a base URL for the transport. */
export function resolveAddr(addr: string, tlsFiles: boolean): { baseUrl: string; tls: boolean } {
  const scheme = /^([a-z]+):\/\//i.exec(addr)?.[1]?.toLowerCase();
  if (scheme !== undefined && scheme !== "http" && scheme !== "https") {
    throw new UsageError(`--addr ${addr}: use host:port, http://host:port or https://host:port`);
  }
  if (scheme === "http" && tlsFiles) {
    throw new UsageError(`--addr ${addr} is plaintext (http://) but --cert/--key/--ca ask for TLS; use https:// or host:port`);
  }
  const tls = scheme === "https" || (scheme === undefined && tlsFiles);
  const raw = scheme === undefined ? `${tls ? "https" : "http"}://${addr}` : addr;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--addr ${addr} is not an address (host:port)`);
  }
  if (url.hostname === "" || (url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.username !== "") {
    throw new UsageError(`--addr ${addr} is not an address (host:port)`);
  }
  if (url.port === "") url.port = String(DEFAULT_PORT);
  return { baseUrl: url.origin, tls };
}

function readPem(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new UsageError(`${flag} ${path}: cannot read it (${code})`);
  }
}

/** The credentials as headers: a bearer token, or (dev mode) the delegator DID. */
function credentials(token: string | undefined, as: string | undefined): Interceptor {
  return (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    if (as) req.header.set("x-delegator-did", as);
    return next(req);
  };
}

const present = (v: string | undefined): v is string => v !== undefined && v !== "";

/** A client for the options; throws UsageError for options that do not fit together. */
export function connect(options: ConnectionOptions, watch = false): Connection {
  if (present(options.cert) !== present(options.key)) {
    throw new UsageError(present(options.cert) ? "--cert needs --key (LLM_BROKER_KEY)" : "--key needs --cert (LLM_BROKER_CERT)");
  }
  const target = present(options.addr) ? options.addr : DEFAULT_ADDR;
  const { baseUrl, tls } = resolveAddr(target, present(options.cert) || present(options.ca));
  const nodeOptions = tls
    ? {
        ...(present(options.ca) ? { ca: readPem("--ca", options.ca) } : {}),
        ...(present(options.cert) ? { cert: readPem("--cert", options.cert) } : {}),
        ...(present(options.key) ? { key: readPem("--key", options.key) } : {}),
      }
    : {};
  const transport = createGrpcTransport({
    baseUrl,
    nodeOptions,
    interceptors: [credentials(options.token, options.as)],
    // A watch notices a connection that died silently (no FIN, no RST) within a ping.
    ...(watch ? { pingIntervalMs: 10_000, pingTimeoutMs: 5_000 } : {}),
  });
  return {
    client: createClient(DelegationService, transport),
    target,
    unary: { timeoutMs: options.timeout ?? 30_000 },
  };
}
