/**
 * A loopback Microsoft Entra: the login authority (OIDC discovery, v2.0 token
 * endpoint) and Microsoft Graph v1.0 (applications, addPassword and
 * removePassword, service principals, Entra Agent ID agent identities,
 * deleted items), each a real HTTPS server on 127.0.0.1 with a certificate
 * made by the `openssl` CLI at test time. Wire formats follow
 * ../shared/EXTERNAL-APIS.md §2: statuses (201 create, 200 addPassword, 204
 * removePassword and delete), Graph error bodies, soft delete into deleted
 * items, $filter on appId and on tags/any(...), $select, cursor paging
 * through @odata.nextLink, 429 with Retry-After. An agent signs in with any
 * password its application still holds, until that password's endDateTime.
 *
 * Faults: an answer (status, code, Retry-After, delay) for the next N calls
 * of a route, replication lag after create, refused connections. Inspection:
 * the directory's objects, deleted items and a request log (without secrets).
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { type IncomingMessage, type ServerResponse } from "node:http";
import { type Server, createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Agent, request } from "undici";
import type { HttpClientOptions } from "../../src/clients/http/http-client.js";
import type { Logger } from "../../src/logging.js";
import { type EntraRegistrarOptions, createEntraRegistrar } from "../../src/registrars/entra/entra-registrar.js";
import type { AgentRegistrar } from "../../src/registrars/registrar.js";

// ---- certificate ----------------------------------------------------------

export interface TlsMaterial {
  key: string;
  /** Self-signed (CA:TRUE) for IP 127.0.0.1 and DNS localhost; trust it as the CA. */
  cert: string;
}

let tls: Promise<TlsMaterial> | undefined;

/** A self-signed certificate for 127.0.0.1/localhost, made once per test process with the openssl CLI. */
export function loopbackCertificate(): Promise<TlsMaterial> {
  tls ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), "entra-fake-"));
    try {
      await promisify(execFile)("openssl", [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "2",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
      ]);
      return { key: await readFile(join(dir, "key.pem"), "utf8"), cert: await readFile(join(dir, "cert.pem"), "utf8") };
    } catch (err) {
      throw new Error("the Entra fake needs the openssl CLI to make its TLS certificate", { cause: err });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return tls;
}

// ---- model ----------------------------------------------------------------

export type EntraRoute =
  | "openid"
  | "token"
  | "createApplication"
  | "listApplications"
  | "getApplication"
  | "deleteApplication"
  | "addPassword"
  | "removePassword"
  | "createServicePrincipal"
  | "listServicePrincipals"
  | "deleteServicePrincipal"
  | "createAgentIdentity"
  | "listAgentIdentities"
  | "getDeletedItem"
  | "purgeDeletedItem";

/** An injected answer. With only `delayMs`, the real answer comes late. */
export interface Fault {
  status?: number;
  /** Graph `error.code`, or the token endpoint's `error`. By default, derived from the status. */
  code?: string;
  /** Retry-After header value (seconds). By default "1" on 429, none otherwise. */
  retryAfter?: string;
  delayMs?: number;
}

export interface PasswordCredential {
  customKeyIdentifier: null;
  displayName: string | null;
  endDateTime: string;
  hint: string;
  keyId: string;
  startDateTime: string;
  secretText: null;
}

export interface FakeApplication {
  "@odata.type"?: string;
  id: string;
  appId: string;
  displayName: string;
  createdDateTime: string;
  deletedDateTime: string | null;
  signInAudience: string;
  identifierUris: string[];
  tags: string[];
  notes: string | null;
  passwordCredentials: PasswordCredential[];
  keyCredentials: unknown[];
  publisherDomain: string;
}

export interface FakeServicePrincipal {
  "@odata.type"?: string;
  id: string;
  appId: string;
  displayName: string;
  appDisplayName: string | null;
  servicePrincipalType: string;
  accountEnabled: boolean;
  createdDateTime: string;
  deletedDateTime: string | null;
  tags: string[];
  /** Agent identities only. */
  agentIdentityBlueprintId?: string;
  /** Agent identities only: sponsor object ids (inspection; Graph exposes them as a relationship). */
  sponsors?: string[];
}

export interface DeletedItem {
  kind: "application" | "servicePrincipal" | "agentIdentity";
  object: FakeApplication | FakeServicePrincipal;
}

export interface LoggedRequest {
  server: "login" | "graph";
  method: string;
  /** Path without the query string. */
  path: string;
  query: URLSearchParams;
  route: EntraRoute | "unknown";
  status: number;
  /** Parsed JSON body (Graph) or form fields without client_secret (token). */
  body: unknown;
  /** Whether the request carried a bearer token the fake accepted. */
  authorized?: boolean;
  /** Date.now() when the request arrived. */
  at: number;
}

export interface EntraFakeOptions {
  tenantId?: string;
  /** The broker's own application. */
  clientId?: string;
  clientSecret?: string;
  /** Seed an agent identity blueprint (and a sponsor user) for the Agent ID path. */
  blueprint?: boolean;
  /** Page size when the client does not send $top. By default, 100. */
  pageSize?: number;
  /** Access token lifetime (expires_in). By default, 3599 s as Entra does. */
  tokenLifetimeSec?: number;
}

interface Seq {
  seq: number;
}

interface TokenGrant {
  clientId: string;
  audience: string;
  expiresAt: number;
}

class HttpError {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly message: string,
    readonly headers: Record<string, string> = {},
  ) {}
}

const GRAPH_CODES: Record<number, string> = {
  400: "BadRequest",
  401: "InvalidAuthenticationToken",
  403: "Authorization_RequestDenied",
  404: "Request_ResourceNotFound",
  409: "Request_MultipleObjectsWithSameKeyValue",
  429: "TooManyRequests",
  500: "InternalServerError",
  502: "BadGateway",
  503: "ServiceUnavailable",
  504: "GatewayTimeout",
};

const TOKEN_ERRORS: Record<number, [string, number]> = {
  400: ["invalid_request", 900144],
  401: ["invalid_client", 7000215],
  429: ["temporarily_unavailable", 50196],
  500: ["server_error", 90033],
  503: ["temporarily_unavailable", 90033],
};

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** `'it''s'` → `it's`. */
function unquote(literal: string): string {
  return literal.slice(1, -1).replaceAll("''", "'");
}

const LITERAL = "'(?:[^']|'')*'";

/** A predicate for the $filter subset the broker uses: `appId eq`, `displayName eq`, `tags/any(t:t eq)`, joined by `and`. */
function parseFilter(filter: string | null): (o: { appId: string; displayName: string; tags: string[] }) => boolean {
  if (!filter) return () => true;
  const clauses = filter.split(/\s+and\s+/i).map((clause) => {
    const c = clause.trim();
    let m = new RegExp(`^(appId|displayName|id)\\s+eq\\s+(${LITERAL})$`).exec(c);
    if (m) {
      const field = m[1] as "appId" | "displayName";
      const value = unquote(m[2]!);
      return (o: { appId: string; displayName: string; tags: string[] }) => o[field] === value;
    }
    m = new RegExp(`^tags/any\\((\\w+):\\1\\s+eq\\s+(${LITERAL})\\)$`).exec(c);
    if (m) {
      const value = unquote(m[2]!);
      return (o: { tags: string[] }) => o.tags.includes(value);
    }
    throw new HttpError(400, "Request_UnsupportedQuery", `Unsupported or invalid query filter clause specified: '${c}'.`);
  });
  return (o) => clauses.every((f) => f(o));
}

// ---- the fake -------------------------------------------------------------

/** The running fake; start it with startEntraFake(). */
export class EntraFake {
  readonly tenantId: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** PEM of the servers' self-signed certificate: pass it as the registrar's `ca`. */
  readonly ca: string;
  readonly applications = new Map<string, FakeApplication & Seq>();
  readonly servicePrincipals = new Map<string, FakeServicePrincipal & Seq>();
  readonly deletedItems = new Map<string, DeletedItem>();
  readonly requests: LoggedRequest[] = [];
  /** Users that may sponsor agent identities. */
  readonly users = new Set<string>();
  /** The seeded blueprint's appId (blueprint option), else "". */
  readonly blueprintAppId: string;
  readonly sponsorId: string;

  private readonly login: Server;
  private readonly graph: Server;
  private loginPort = 0;
  private graphPort = 0;
  private readonly pageSize: number;
  private readonly tokenLifetimeSec: number;
  private readonly faults = new Map<EntraRoute | "unknown", Fault[]>();
  private readonly tokens = new Map<string, TokenGrant>();
  /** Agent passwords: appId → secrets with their expiry. */
  private readonly secrets = new Map<string, { keyId: string; secretText: string; endDateTime: string }[]>();
  /** appId → lookups that still miss (replication lag). */
  private readonly lagging = new Map<string, { addPassword: number; servicePrincipal: number }>();
  private lag = 0;
  private seq = 0;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(tlsMaterial: TlsMaterial, options: EntraFakeOptions) {
    this.tenantId = options.tenantId ?? randomUUID();
    this.clientId = options.clientId ?? randomUUID();
    this.clientSecret = options.clientSecret ?? `broker~${randomBytes(24).toString("base64url")}`;
    this.ca = tlsMaterial.cert;
    this.pageSize = options.pageSize ?? 100;
    this.tokenLifetimeSec = options.tokenLifetimeSec ?? 3599;
    this.login = createServer({ key: tlsMaterial.key, cert: tlsMaterial.cert }, (req, res) => void this.handle("login", req, res));
    this.graph = createServer({ key: tlsMaterial.key, cert: tlsMaterial.cert }, (req, res) => void this.handle("graph", req, res));
    this.blueprintAppId = "";
    this.sponsorId = "";
    if (options.blueprint) {
      const blueprint = this.newApplication({ displayName: "LLM broker agents", tags: [] });
      blueprint["@odata.type"] = "#microsoft.graph.agentIdentityBlueprint";
      this.blueprintAppId = blueprint.appId;
      this.sponsorId = randomUUID();
      this.users.add(this.sponsorId);
    }
  }

  /** The authority host, e.g. https://127.0.0.1:40123 (tenant not included). */
  get authorityHost(): string {
    return `https://127.0.0.1:${this.loginPort}`;
  }

  /** The Graph base URL, e.g. https://127.0.0.1:40124/v1.0. */
  get graphUrl(): string {
    return `https://127.0.0.1:${this.graphPort}/v1.0`;
  }

  /** Options for createEntraRegistrar pointing at this fake. */
  registrarOptions(): EntraRegistrarOptions {
    return {
      tenantId: this.tenantId,
      clientId: this.clientId,
      clientSecret: this.clientSecret,
      authorityHost: this.authorityHost,
      graphUrl: this.graphUrl,
      ca: this.ca,
      ...(this.blueprintAppId ? { agentBlueprintId: this.blueprintAppId, sponsorId: this.sponsorId } : {}),
    };
  }

  async start(): Promise<void> {
    this.loginPort = await listen(this.login, 0);
    this.graphPort = await listen(this.graph, 0);
  }

  // ---- faults -------------------------------------------------------------

  /** Answers the next `times` calls of `route` with `fault`. */
  fail(route: EntraRoute, fault: Fault, times = 1): void {
    const queue = this.faults.get(route) ?? [];
    for (let i = 0; i < times; i++) queue.push(fault);
    this.faults.set(route, queue);
  }

  /** Drops pending faults. */
  clearFaults(): void {
    this.faults.clear();
  }

  /**
   * Replication lag: after each later application create, the first `n`
   * addPassword calls answer 404 Request_ResourceNotFound and the first `n`
   * service-principal creates 400 "does not reference a valid application object".
   */
  replicationLag(n: number): void {
    this.lag = n;
  }

  /** Closes a server's listener and connections: clients get ECONNREFUSED until accept(). */
  async refuse(server: "login" | "graph"): Promise<void> {
    const s = server === "login" ? this.login : this.graph;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }

  /** Listens again (same port) after refuse(). */
  async accept(server: "login" | "graph"): Promise<void> {
    if (server === "login") await listen(this.login, this.loginPort);
    else await listen(this.graph, this.graphPort);
  }

  /** Makes every issued access token expired (Graph answers 401 until a new one is fetched). */
  expireTokens(): void {
    for (const grant of this.tokens.values()) grant.expiresAt = 0;
  }

  // ---- inspection ---------------------------------------------------------

  /** Logged requests of one route. */
  calls(route: EntraRoute): LoggedRequest[] {
    return this.requests.filter((r) => r.route === route);
  }

  /** Live applications and agent identities tagged with a delegation id (deleted items excluded). */
  identities(): { delegationId: string; clientId: string; objectId: string }[] {
    const out: { delegationId: string; clientId: string; objectId: string }[] = [];
    const live = [...this.applications.values(), ...[...this.servicePrincipals.values()].filter((sp) => sp.agentIdentityBlueprintId)];
    for (const o of live) {
      const tag = o.tags.find((t) => t.startsWith("delegation_id:"));
      if (tag) out.push({ delegationId: tag.slice("delegation_id:".length), clientId: o.appId, objectId: o.id });
    }
    return out;
  }

  /** Seeds an application as another tool would have created it (no service principal). */
  addApplication(displayName: string, tags: string[] = []): FakeApplication {
    return this.newApplication({ displayName, tags });
  }

  /**
   * Adds a password to an application directly (as an operator or another tool
   * would have), returning its keyId and secret.
   */
  addPasswordTo(objectId: string, passwordCredential: { displayName?: string; endDateTime?: string } = {}): { keyId: string; secretText: string } {
    const body = this.addPassword({ id: objectId }, { passwordCredential }).body as { keyId: string; secretText: string };
    return { keyId: body.keyId, secretText: body.secretText };
  }

  /** Every access token issued (to check that none leaks into logs). */
  accessTokens(): string[] {
    return [...this.tokens.keys()];
  }

  /** The application with this appId, live. */
  applicationByAppId(appId: string): (FakeApplication & Seq) | undefined {
    return [...this.applications.values()].find((a) => a.appId === appId);
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    await Promise.all(
      [this.login, this.graph].map(
        (s) =>
          new Promise<void>((resolve) => {
            if (!s.listening) return resolve();
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
  }

  // ---- HTTP ---------------------------------------------------------------

  private async handle(server: "login" | "graph", req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    const text = await readBody(req);
    const entry: LoggedRequest = { server, method: req.method ?? "", path: url.pathname, query: url.searchParams, route: "unknown", status: 0, body: undefined, at: Date.now() };
    this.requests.push(entry);
    let status = 500;
    let headers: Record<string, string> = {};
    let body: unknown;
    try {
      const routed = server === "login" ? this.routeLogin(req, url, text, entry) : this.routeGraph(req, url, text, entry);
      entry.route = routed.route;
      const fault = this.faults.get(routed.route)?.shift();
      if (fault?.delayMs) await this.sleep(fault.delayMs);
      if (fault?.status) {
        throw new HttpError(
          fault.status,
          fault.code ?? (server === "login" ? (TOKEN_ERRORS[fault.status]?.[0] ?? "server_error") : (GRAPH_CODES[fault.status] ?? "UnknownError")),
          fault.status === 429 ? "Too many requests. Please try again later." : `Injected failure ${fault.status}.`,
          fault.retryAfter !== undefined ? { "retry-after": fault.retryAfter } : fault.status === 429 ? { "retry-after": "1" } : {},
        );
      }
      ({ status, headers = {}, body } = routed.run());
    } catch (caught) {
      const err = caught instanceof HttpError ? caught : new HttpError(500, "InternalServerError", `The fake failed: ${String(caught)}`);
      status = err.status;
      headers = err.headers;
      body = server === "login" ? this.tokenErrorBody(err) : this.graphErrorBody(err);
    }
    entry.status = status;
    if (res.destroyed) return;
    const payload = body === undefined ? "" : JSON.stringify(body);
    res.writeHead(status, {
      ...headers,
      ...(payload ? { "content-type": "application/json; charset=utf-8" } : {}),
      "request-id": randomUUID(),
    });
    res.end(payload);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private graphErrorBody(err: HttpError) {
    return {
      error: {
        code: err.code,
        message: err.message,
        innerError: { date: new Date().toISOString().slice(0, 19), "request-id": randomUUID(), "client-request-id": randomUUID() },
      },
    };
  }

  private tokenErrorBody(err: HttpError) {
    const aadsts = TOKEN_ERRORS[err.status]?.[1] ?? 90033;
    const traceId = randomUUID();
    const correlationId = randomUUID();
    const timestamp = new Date().toISOString().replace("T", " ").slice(0, 19) + "Z";
    return {
      error: err.code,
      error_description: `AADSTS${aadsts}: ${err.message}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
      error_codes: [aadsts],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
    };
  }

  // ---- login --------------------------------------------------------------

  private routeLogin(req: IncomingMessage, url: URL, text: string, entry: LoggedRequest): Route {
    const base = this.authorityHost;
    let m = /^\/([^/]+)\/v2\.0\/\.well-known\/openid-configuration$/.exec(url.pathname);
    if (m && req.method === "GET") {
      const tenant = decodeURIComponent(m[1]!);
      return {
        route: "openid",
        run: () => {
          if (tenant !== this.tenantId) throw new HttpError(400, "invalid_tenant", `Tenant '${tenant}' not found.`);
          return {
            status: 200,
            body: {
              issuer: `${base}/${tenant}/v2.0`,
              token_endpoint: `${base}/${tenant}/oauth2/v2.0/token`,
              authorization_endpoint: `${base}/${tenant}/oauth2/v2.0/authorize`,
              device_authorization_endpoint: `${base}/${tenant}/oauth2/v2.0/devicecode`,
              end_session_endpoint: `${base}/${tenant}/oauth2/v2.0/logout`,
              jwks_uri: `${base}/${tenant}/discovery/v2.0/keys`,
              token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
              response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
              scopes_supported: ["openid", "profile", "email", "offline_access"],
              tenant_region_scope: "EU",
            },
          };
        },
      };
    }
    m = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url.pathname);
    if (m && req.method === "POST") {
      const tenant = decodeURIComponent(m[1]!);
      const form = new URLSearchParams(text);
      const logged = Object.fromEntries([...form].filter(([k]) => k !== "client_secret"));
      entry.body = logged;
      return { route: "token", run: () => this.token(tenant, req, form) };
    }
    return {
      route: "unknown",
      run: () => {
        throw new HttpError(404, "invalid_request", `No route for ${req.method} ${url.pathname}.`);
      },
    };
  }

  private token(tenant: string, req: IncomingMessage, form: URLSearchParams): Answer {
    if (tenant !== this.tenantId) throw new HttpError(400, "invalid_tenant", `Tenant '${tenant}' not found.`);
    if (!(req.headers["content-type"] ?? "").startsWith("application/x-www-form-urlencoded")) {
      throw new HttpError(400, "invalid_request", "The request body must contain the following parameter: 'grant_type'.");
    }
    if (form.get("grant_type") !== "client_credentials") {
      throw new HttpError(400, "unsupported_grant_type", "The provided value for the input parameter 'grant_type' is not valid.");
    }
    let clientId = form.get("client_id") ?? "";
    let secret = form.get("client_secret") ?? "";
    const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? "");
    if (basic) {
      const [id, pw] = Buffer.from(basic[1]!, "base64").toString("utf8").split(":");
      clientId = decodeURIComponent(id ?? "");
      secret = decodeURIComponent(pw ?? "");
    }
    const scope = form.get("scope") ?? "";
    if (!/^https:\/\/[^ ]+\/\.default$/.test(scope)) {
      throw new HttpError(400, "invalid_scope", `The provided value for the input parameter 'scope' is not valid. The scope ${scope} is not valid.`);
    }
    if (clientId === this.clientId) {
      if (secret !== this.clientSecret) {
        throw new HttpError(401, "invalid_client", `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`);
      }
    } else {
      // An agent signing in with the password the broker was given.
      const app = this.applicationByAppId(clientId);
      const hasPrincipal = [...this.servicePrincipals.values()].some((sp) => sp.appId === clientId);
      if (!app || !hasPrincipal) {
        throw new HttpError(400, "unauthorized_client", `Application with identifier '${clientId}' was not found in the directory '${tenant}'.`);
      }
      const match = (this.secrets.get(clientId) ?? []).find((s) => s.secretText === secret);
      if (!match) throw new HttpError(401, "invalid_client", `Invalid client secret provided for app '${clientId}'.`);
      if (Date.parse(match.endDateTime) <= Date.now()) {
        throw new HttpError(401, "invalid_client", `The provided client secret keys for app '${clientId}' are expired.`);
      }
    }
    const accessToken = `fake-at.${randomBytes(24).toString("base64url")}`;
    this.tokens.set(accessToken, {
      clientId,
      audience: scope.slice(0, -"/.default".length),
      expiresAt: Date.now() + this.tokenLifetimeSec * 1000,
    });
    return {
      status: 200,
      headers: { "cache-control": "no-store, no-cache", pragma: "no-cache" },
      body: { token_type: "Bearer", expires_in: this.tokenLifetimeSec, ext_expires_in: this.tokenLifetimeSec, access_token: accessToken },
    };
  }

  // ---- Graph --------------------------------------------------------------

  private authorize(req: IncomingMessage, entry: LoggedRequest): void {
    const m = /^Bearer (.+)$/i.exec(req.headers.authorization ?? "");
    if (!m) throw new HttpError(401, "InvalidAuthenticationToken", "Access token is empty.");
    const grant = this.tokens.get(m[1]!);
    if (!grant) throw new HttpError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed, there are no dots (.).");
    if (grant.expiresAt <= Date.now()) throw new HttpError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.");
    if (grant.audience !== `https://127.0.0.1:${this.graphPort}`) {
      throw new HttpError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.");
    }
    entry.authorized = true;
  }

  private routeGraph(req: IncomingMessage, url: URL, text: string, entry: LoggedRequest): Route {
    const method = req.method ?? "";
    const path = decodeURIComponent(url.pathname);
    const json = (): Record<string, unknown> => {
      if (text === "") return {};
      try {
        const v = JSON.parse(text) as unknown;
        if (v && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
      } catch {
        // falls through
      }
      throw new HttpError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.");
    };
    if (text) {
      try {
        entry.body = JSON.parse(text);
      } catch {
        entry.body = text;
      }
    }
    const route = (name: EntraRoute, run: () => Answer): Route => ({
      route: name,
      run: () => {
        this.authorize(req, entry);
        return run();
      },
    });
    const key = `(?:/([^/()]+)|\\(appId=(${LITERAL})\\))`;
    let m: RegExpExecArray | null;

    if (path === "/v1.0/applications") {
      if (method === "POST") return route("createApplication", () => this.createApplication(json()));
      if (method === "GET") return route("listApplications", () => this.list(url, "applications", [...this.applications.values()]));
    }
    if ((m = new RegExp(`^/v1\\.0/applications${key}/addPassword$`).exec(path)) && method === "POST") {
      const ref = { id: m[1], appId: m[2] && unquote(m[2]) };
      return route("addPassword", () => this.addPassword(ref, json()));
    }
    if ((m = new RegExp(`^/v1\\.0/applications${key}/removePassword$`).exec(path)) && method === "POST") {
      const ref = { id: m[1], appId: m[2] && unquote(m[2]) };
      return route("removePassword", () => this.removePassword(ref, json()));
    }
    if ((m = new RegExp(`^/v1\\.0/applications${key}$`).exec(path))) {
      const ref = { id: m[1], appId: m[2] && unquote(m[2]) };
      if (method === "GET") return route("getApplication", () => this.getApplication(url, ref));
      if (method === "DELETE") return route("deleteApplication", () => this.deleteApplication(ref));
    }
    if (path === "/v1.0/servicePrincipals") {
      if (method === "POST") return route("createServicePrincipal", () => this.createServicePrincipal(json()));
      if (method === "GET") return route("listServicePrincipals", () => this.list(url, "servicePrincipals", [...this.servicePrincipals.values()]));
    }
    if (/^\/v1\.0\/servicePrincipals\/microsoft\.graph\.agentIdentity$/i.test(path)) {
      if (method === "POST") return route("createAgentIdentity", () => this.createAgentIdentity(json()));
      if (method === "GET") {
        const agents = [...this.servicePrincipals.values()].filter((sp) => sp["@odata.type"] === "#microsoft.graph.agentIdentity");
        return route("listAgentIdentities", () => this.list(url, "servicePrincipals/microsoft.graph.agentIdentity", agents));
      }
    }
    if ((m = new RegExp(`^/v1\\.0/servicePrincipals${key}$`).exec(path)) && method === "DELETE") {
      const ref = { id: m[1], appId: m[2] && unquote(m[2]) };
      return route("deleteServicePrincipal", () => this.deleteServicePrincipal(ref));
    }
    if ((m = /^\/v1\.0\/directory\/deletedItems\/([^/]+)$/.exec(path))) {
      const id = m[1]!;
      if (method === "GET") return route("getDeletedItem", () => ({ status: 200, body: this.deletedItem(id).object }));
      if (method === "DELETE") {
        return route("purgeDeletedItem", () => {
          this.deletedItem(id);
          this.deletedItems.delete(id);
          return { status: 204 };
        });
      }
    }
    return {
      route: "unknown",
      run: () => {
        throw new HttpError(400, "BadRequest", `Resource not found for the segment '${path.split("/").pop() ?? ""}'.`);
      },
    };
  }

  private notFound(id: string): HttpError {
    return new HttpError(404, "Request_ResourceNotFound", `Resource '${id}' does not exist or one of its queried reference-property objects are not present.`);
  }

  private deletedItem(id: string): DeletedItem {
    const item = this.deletedItems.get(id);
    if (!item) throw this.notFound(id);
    return item;
  }

  private findApplication(ref: { id?: string | undefined; appId?: string | undefined }): FakeApplication & Seq {
    const app = ref.id !== undefined ? this.applications.get(ref.id) : this.applicationByAppId(ref.appId ?? "");
    if (!app) throw this.notFound(ref.id ?? ref.appId ?? "");
    return app;
  }

  private newApplication(body: { displayName: string; tags: string[]; signInAudience?: string; notes?: string | null }): FakeApplication & Seq {
    const app: FakeApplication & Seq = {
      seq: ++this.seq,
      id: randomUUID(),
      appId: randomUUID(),
      displayName: body.displayName,
      createdDateTime: new Date().toISOString(),
      deletedDateTime: null,
      signInAudience: body.signInAudience ?? "AzureADMyOrg",
      identifierUris: [],
      tags: body.tags,
      notes: body.notes ?? null,
      passwordCredentials: [],
      keyCredentials: [],
      publisherDomain: "contoso.onmicrosoft.com",
    };
    this.applications.set(app.id, app);
    return app;
  }

  private createApplication(body: Record<string, unknown>): Answer {
    if (typeof body.displayName !== "string" || body.displayName === "") {
      throw new HttpError(400, "Request_BadRequest", "A value is required for property 'displayName' of resource 'Application'.");
    }
    if (body.passwordCredentials !== undefined && (!Array.isArray(body.passwordCredentials) || body.passwordCredentials.length > 0)) {
      throw new HttpError(400, "Request_BadRequest", "Property 'passwordCredentials' cannot be set at creation; use addPassword.");
    }
    const tags = Array.isArray(body.tags) ? body.tags.filter((t): t is string => typeof t === "string") : [];
    const app = this.newApplication({
      displayName: body.displayName,
      tags,
      ...(typeof body.signInAudience === "string" ? { signInAudience: body.signInAudience } : {}),
      notes: typeof body.notes === "string" ? body.notes : null,
    });
    if (this.lag > 0) this.lagging.set(app.appId, { addPassword: this.lag, servicePrincipal: this.lag });
    return { status: 201, body: { "@odata.context": `${this.graphUrl}/$metadata#applications/$entity`, ...strip(app) } };
  }

  private addPassword(ref: { id?: string | undefined; appId?: string | undefined }, body: Record<string, unknown>): Answer {
    const app = this.findApplication(ref);
    const lag = this.lagging.get(app.appId);
    if (lag && lag.addPassword > 0) {
      lag.addPassword--;
      throw this.notFound(app.id);
    }
    const pc = (body.passwordCredential ?? {}) as Record<string, unknown>;
    const start = typeof pc.startDateTime === "string" ? pc.startDateTime : new Date().toISOString();
    const end =
      typeof pc.endDateTime === "string" ? pc.endDateTime : new Date(Date.parse(start) + 2 * 365 * 24 * 3600 * 1000).toISOString();
    if (Number.isNaN(Date.parse(end))) throw new HttpError(400, "Request_BadRequest", "Invalid value specified for property 'endDateTime'.");
    const secretText = `${randomBytes(3).toString("hex").slice(0, 3)}8Q~${randomBytes(27).toString("base64url")}`;
    const credential: PasswordCredential = {
      customKeyIdentifier: null,
      displayName: typeof pc.displayName === "string" ? pc.displayName : null,
      endDateTime: end,
      hint: secretText.slice(0, 3),
      keyId: randomUUID(),
      startDateTime: start,
      secretText: null,
    };
    app.passwordCredentials.push(credential);
    const list = this.secrets.get(app.appId) ?? [];
    list.push({ keyId: credential.keyId, secretText, endDateTime: end });
    this.secrets.set(app.appId, list);
    return {
      status: 200,
      body: { "@odata.context": `${this.graphUrl}/$metadata#microsoft.graph.passwordCredential`, ...credential, secretText },
    };
  }

  /** GET /applications/{id} or /applications(appId='…'), honouring $select. */
  private getApplication(url: URL, ref: { id?: string | undefined; appId?: string | undefined }): Answer {
    const app = this.findApplication(ref);
    const select = url.searchParams.get("$select")?.split(",").map((s) => s.trim());
    const visible = strip(app) as Record<string, unknown>;
    const body = select ? Object.fromEntries(Object.entries(visible).filter(([k]) => select.includes(k) || k === "@odata.type")) : visible;
    const context = `${this.graphUrl}/$metadata#applications${select ? `(${select.join(",")})` : ""}/$entity`;
    return { status: 200, body: { "@odata.context": context, ...body } };
  }

  /**
   * POST /applications/{id}/removePassword {"keyId"} → 204 No Content; the
   * password stops working at once. A keyId the application does not hold is
   * a 400 (status as observed from real Graph by other clients, with this
   * message; the error code is not documented).
   */
  private removePassword(ref: { id?: string | undefined; appId?: string | undefined }, body: Record<string, unknown>): Answer {
    const app = this.findApplication(ref);
    const keyId = body.keyId;
    if (typeof keyId !== "string" || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(keyId)) {
      throw new HttpError(400, "Request_BadRequest", "Invalid value specified for property 'keyId' of resource 'PasswordCredential'.");
    }
    const at = app.passwordCredentials.findIndex((c) => c.keyId.toLowerCase() === keyId.toLowerCase());
    if (at < 0) throw new HttpError(400, "Request_BadRequest", `No password credential found with keyId ${keyId}.`);
    const [removed] = app.passwordCredentials.splice(at, 1);
    this.secrets.set(app.appId, (this.secrets.get(app.appId) ?? []).filter((c) => c.keyId !== removed!.keyId));
    return { status: 204 };
  }

  private deleteApplication(ref: { id?: string | undefined; appId?: string | undefined }): Answer {
    const app = this.findApplication(ref);
    this.applications.delete(app.id);
    app.deletedDateTime = new Date().toISOString();
    this.deletedItems.set(app.id, { kind: "application", object: app });
    // Its service principal goes with it.
    for (const [id, sp] of this.servicePrincipals) if (sp.appId === app.appId) this.servicePrincipals.delete(id);
    return { status: 204 };
  }

  private createServicePrincipal(body: Record<string, unknown>): Answer {
    const appId = typeof body.appId === "string" ? body.appId : "";
    if (!appId) throw new HttpError(400, "Request_BadRequest", "A value is required for property 'appId' of resource 'ServicePrincipal'.");
    const app = this.applicationByAppId(appId);
    const lag = this.lagging.get(appId);
    if (!app || (lag && lag.servicePrincipal > 0)) {
      if (lag && lag.servicePrincipal > 0) lag.servicePrincipal--;
      throw new HttpError(400, "Request_BadRequest", `The appId '${appId}' of the service principal does not reference a valid application object.`);
    }
    if ([...this.servicePrincipals.values()].some((sp) => sp.appId === appId)) {
      throw new HttpError(409, "Request_MultipleObjectsWithSameKeyValue", "Another object with the same value for property servicePrincipalNames already exists.");
    }
    const sp: FakeServicePrincipal & Seq = {
      seq: ++this.seq,
      id: randomUUID(),
      appId,
      displayName: app.displayName,
      appDisplayName: app.displayName,
      servicePrincipalType: "Application",
      accountEnabled: true,
      createdDateTime: new Date().toISOString(),
      deletedDateTime: null,
      tags: Array.isArray(body.tags) ? body.tags.filter((t): t is string => typeof t === "string") : [],
    };
    this.servicePrincipals.set(sp.id, sp);
    return { status: 201, body: { "@odata.context": `${this.graphUrl}/$metadata#servicePrincipals/$entity`, ...strip(sp) } };
  }

  private createAgentIdentity(body: Record<string, unknown>): Answer {
    if (typeof body.displayName !== "string" || body.displayName === "") {
      throw new HttpError(400, "Request_BadRequest", "A value is required for property 'displayName' of resource 'AgentIdentity'.");
    }
    // v1.0's example and resource use agentIdentityBlueprintId; its request-body table (and beta) say ...AppId.
    const blueprintId = body.agentIdentityBlueprintId ?? body.agentIdentityBlueprintAppId;
    const blueprint = [...this.applications.values()].find(
      (a) => a.appId === blueprintId && a["@odata.type"] === "#microsoft.graph.agentIdentityBlueprint",
    );
    if (!blueprint) throw new HttpError(400, "Request_BadRequest", `Agent identity blueprint '${String(blueprintId)}' was not found.`);
    const binds = body["sponsors@odata.bind"];
    if (!Array.isArray(binds) || binds.length === 0) {
      throw new HttpError(400, "Request_BadRequest", "An agent identity must have at least one sponsor.");
    }
    const sponsors: string[] = [];
    for (const bind of binds) {
      const m = typeof bind === "string" ? /^https:\/\/[^/]+\/v1\.0\/(users|groups)\/([^/]+)$/.exec(bind) : null;
      if (!m || !this.users.has(decodeURIComponent(m[2]!))) {
        throw new HttpError(400, "Request_BadRequest", `Invalid sponsor reference '${String(bind)}'.`);
      }
      sponsors.push(decodeURIComponent(m[2]!));
    }
    const sp: FakeServicePrincipal & Seq = {
      "@odata.type": "#microsoft.graph.agentIdentity",
      seq: ++this.seq,
      id: randomUUID(),
      appId: randomUUID(),
      displayName: body.displayName,
      appDisplayName: null,
      servicePrincipalType: "ServiceIdentity",
      accountEnabled: true,
      createdDateTime: new Date().toISOString(),
      deletedDateTime: null,
      tags: Array.isArray(body.tags) ? body.tags.filter((t): t is string => typeof t === "string") : [],
      agentIdentityBlueprintId: blueprint.appId,
      sponsors,
    };
    this.servicePrincipals.set(sp.id, sp);
    const { sponsors: _sponsors, ...visible } = strip(sp);
    return { status: 201, body: { "@odata.context": `${this.graphUrl}/$metadata#servicePrincipals/microsoft.graph.agentIdentity/$entity`, ...visible } };
  }

  private deleteServicePrincipal(ref: { id?: string | undefined; appId?: string | undefined }): Answer {
    const sp =
      ref.id !== undefined ? this.servicePrincipals.get(ref.id) : [...this.servicePrincipals.values()].find((s) => s.appId === ref.appId);
    if (!sp) throw this.notFound(ref.id ?? ref.appId ?? "");
    this.servicePrincipals.delete(sp.id);
    sp.deletedDateTime = new Date().toISOString();
    this.deletedItems.set(sp.id, { kind: sp.agentIdentityBlueprintId ? "agentIdentity" : "servicePrincipal", object: sp });
    return { status: 204 };
  }

  /** A collection page: $filter, $select, $top, and a cursor $skiptoken (stable under deletes). */
  private list(url: URL, segment: string, all: ((FakeApplication | FakeServicePrincipal) & Seq)[]): Answer {
    const q = url.searchParams;
    const match = parseFilter(q.get("$filter"));
    const top = q.has("$top") ? Number(q.get("$top")) : this.pageSize;
    if (!Number.isInteger(top) || top < 1 || top > 999) throw new HttpError(400, "Request_BadRequest", "Invalid page size specified: '" + q.get("$top") + "'. Must be between 1 and 999 inclusive.");
    const after = q.has("$skiptoken") ? Number(Buffer.from(q.get("$skiptoken")!, "base64url").toString("utf8")) : 0;
    const items = all
      .filter((o) => o.seq > after && match(o))
      .sort((a, b) => a.seq - b.seq);
    const page = items.slice(0, Math.min(top, this.pageSize));
    const select = q.get("$select")?.split(",").map((s) => s.trim());
    const value = page.map((o) => {
      const { sponsors: _s, ...visible } = strip(o) as Record<string, unknown>;
      if (!select) return visible;
      return Object.fromEntries(Object.entries(visible).filter(([k]) => select.includes(k) || k === "@odata.type"));
    });
    const body: Record<string, unknown> = { "@odata.context": `${this.graphUrl}/$metadata#${segment}`, value };
    const last = page.at(-1);
    if (last && items.length > page.length) {
      const next = new URLSearchParams(q);
      next.set("$skiptoken", Buffer.from(String(last.seq)).toString("base64url"));
      body["@odata.nextLink"] = `${this.graphUrl}/${segment}?${next.toString()}`;
    }
    return { status: 200, body };
  }
}

interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

interface Route {
  route: EntraRoute | "unknown";
  run: () => Answer;
}

/** The object as Graph shows it: without the fake's bookkeeping. */
function strip<T extends Seq>(o: T): Omit<T, "seq"> {
  const { seq: _seq, ...rest } = o;
  return rest;
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Starts the fake's two HTTPS servers on ephemeral loopback ports. */
export async function startEntraFake(options: EntraFakeOptions = {}): Promise<EntraFake> {
  const fake = new EntraFake(await loopbackCertificate(), options);
  await fake.start();
  return fake;
}

// ---- harness --------------------------------------------------------------

export interface EntraHarness {
  registrar: AgentRegistrar;
  fake: EntraFake;
  /** What the fake IdP holds, excluding deleted items. */
  identities(): Promise<{ delegationId: string; clientId: string }[]>;
  /** Whether the authority issues a token for these client credentials, as the agent would ask for one. */
  secretWorks(clientId: string, secret: string): Promise<boolean>;
  close(): Promise<void>;
}

/** Status of a client_credentials token request for Graph, as an agent sends it, to the fake's authority. */
export async function agentTokenStatus(fake: EntraFake, clientId: string, clientSecret: string): Promise<number> {
  const dispatcher = new Agent({ connect: { ca: fake.ca } });
  try {
    const res = await request(`${fake.authorityHost}/${fake.tenantId}/oauth2/v2.0/token`, {
      dispatcher,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", client_id: clientId, client_secret: clientSecret, scope: `${new URL(fake.graphUrl).origin}/.default` }).toString(),
    });
    await res.body.text();
    return res.statusCode;
  } finally {
    await dispatcher.close();
  }
}

export interface EntraHarnessOptions {
  /** Entra Agent ID path: agent identities of a seeded blueprint. */
  blueprint?: boolean;
  purgeDeleted?: boolean;
  /** Options of the registrar's HttpClient. By default, fast: 2 s attempts, 2 retries, short backoff. */
  httpOptions?: Omit<HttpClientOptions, "system" | "ca">;
  fake?: EntraFakeOptions;
  log?: Logger;
}

/** A registrar wired to a fresh fake (for the cross-driver conformance suite). */
export async function startEntraHarness(opts: EntraHarnessOptions = {}): Promise<EntraHarness> {
  const fake = await startEntraFake({ ...opts.fake, ...(opts.blueprint ? { blueprint: true } : {}) });
  const registrar = createEntraRegistrar({
    ...fake.registrarOptions(),
    ...(opts.purgeDeleted ? { purgeDeleted: true } : {}),
    httpOptions: { timeoutMs: 2_000, maxRetries: 2, minBackoffMs: 10, maxBackoffMs: 100, ...opts.httpOptions },
    ...(opts.log ? { log: opts.log } : {}),
  });
  return {
    registrar,
    fake,
    identities: async () => fake.identities().map(({ delegationId, clientId }) => ({ delegationId, clientId })),
    secretWorks: async (clientId, secret) => (await agentTokenStatus(fake, clientId, secret)) === 200,
    close: async () => {
      await registrar.close();
      await fake.close();
    },
  };
}
