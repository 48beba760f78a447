/**
 * A loopback Keycloak 26.x for tests: a real HTTP server on 127.0.0.1 that
 * speaks the token endpoint and the Admin REST API for clients as described in
 * ../shared/EXTERNAL-APIS.md §1 and §5 (status codes, bodies, headers), with
 * switchable faults (statuses, delays, dropped and refused connections, dead
 * admin tokens, a create that answers 409 after creating), an optional
 * client-secret-rotation policy (a regenerated secret leaves the previous one
 * valid as "rotated" until invalidated) and inspection of what it holds and
 * what it was sent.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { HttpClient, type HttpClientOptions } from "../../src/clients/http/http-client.js";
import type { Logger } from "../../src/logging.js";
import { createKeycloakRegistrar } from "../../src/registrars/keycloak/keycloak-registrar.js";
import type { AgentRegistrar } from "../../src/registrars/registrar.js";

/** The routes faults can be attached to. */
export type KeycloakRoute = "token" | "create" | "list" | "get" | "delete" | "getSecret" | "regenerateSecret" | "invalidateRotatedSecret";

/** What the fake does instead of (or before) answering normally. */
export type KeycloakFault =
  /** Answer this status (with Keycloak-like default bodies) without doing the work. */
  | { kind: "status"; status: number; body?: unknown; headers?: Record<string, string> }
  /** Wait, then handle the request normally (the work is done even if the caller gave up). */
  | { kind: "delay"; ms: number }
  /** Destroy the connection without answering, without doing the work. */
  | { kind: "drop" }
  /** create only: create the client, then answer 409 as if it had existed (an interrupted attempt). */
  | { kind: "conflictAfterCreate" };

/** A client the fake holds. */
export interface FakeClient {
  id: string;
  clientId: string;
  name: string;
  enabled: boolean;
  publicClient: boolean;
  bearerOnly: boolean;
  serviceAccountsEnabled: boolean;
  standardFlowEnabled: boolean;
  directAccessGrantsEnabled: boolean;
  protocol: string;
  /** Undefined for public and bearer-only clients. */
  secret: string | undefined;
  /** The previous secret, still accepted, under a secret-rotation policy (`secretRotation`). */
  rotatedSecret: string | undefined;
  attributes: Record<string, string>;
  /** realm-management client roles of its service account (manage-clients, view-clients, query-clients, realm-admin). */
  roles: string[];
  /** The representation as posted (create only). */
  posted: Record<string, unknown> | undefined;
}

/** One request the fake received. */
export interface RecordedRequest {
  route: KeycloakRoute | "unknown";
  method: string;
  /** Path and query, as sent. */
  url: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Date.now() on arrival. */
  at: number;
}

export interface KeycloakFakeOptions {
  /** By default, "agents". */
  realm?: string;
  /** The broker's admin client. By default, "llm-broker-admin" with a random secret. */
  adminClientId?: string;
  adminClientSecret?: string;
  /** Roles of the admin client's service account. By default, ["manage-clients"]. */
  adminRoles?: string[];
  /** expires_in of issued tokens, seconds. By default, 300 (Keycloak's default). */
  tokenLifetimeSec?: number;
  /** Decides token expiry. By default, Date.now. */
  clock?: () => number;
  /**
   * Acts as if a client policy with the secret-rotation executor applied:
   * regenerating keeps the previous secret valid as "rotated" until
   * DELETE .../client-secret/rotated. By default, false (Keycloak's default).
   */
  secretRotation?: boolean;
}

interface IssuedToken {
  clientId: string;
  roles: string[];
  expiresAt: number;
  revoked: boolean;
}

const JSON_TYPE = "application/json";

/** A Keycloak-like server. Start with `KeycloakFake.start()`. */
export class KeycloakFake {
  readonly realm: string;
  readonly adminClientId: string;
  readonly adminClientSecret: string;
  /** expires_in of tokens issued from now on. */
  tokenLifetimeSec: number;
  /** See KeycloakFakeOptions.secretRotation. */
  secretRotation: boolean;
  readonly requests: RecordedRequest[] = [];
  private readonly byId = new Map<string, FakeClient>();
  private readonly tokens = new Map<string, IssuedToken>();
  private readonly faults = new Map<KeycloakRoute, KeycloakFault[]>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly clock: () => number;
  private readonly server: Server;
  private port = 0;
  private listening = false;

  private constructor(options: KeycloakFakeOptions) {
    this.realm = options.realm ?? "agents";
    this.adminClientId = options.adminClientId ?? "llm-broker-admin";
    this.adminClientSecret = options.adminClientSecret ?? `admin-${randomBytes(18).toString("base64url")}`;
    this.tokenLifetimeSec = options.tokenLifetimeSec ?? 300;
    this.secretRotation = options.secretRotation ?? false;
    this.clock = options.clock ?? Date.now;
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent && !res.destroyed) send(res, 500, { error: "unknown_error", detail: String(err) });
      });
    });
    this.seedClient({
      clientId: this.adminClientId,
      secret: this.adminClientSecret,
      serviceAccountsEnabled: true,
      roles: options.adminRoles ?? ["manage-clients"],
    });
  }

  /** Starts a fake on a free loopback port. */
  static async start(options: KeycloakFakeOptions = {}): Promise<KeycloakFake> {
    const fake = new KeycloakFake(options);
    await fake.listen(0);
    return fake;
  }

  /** Base URL, e.g. http://127.0.0.1:41234 (stays the same while connections are refused). */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  // ---- inspection ----------------------------------------------------------

  /** Every client except the broker's admin client. */
  clients(): FakeClient[] {
    return [...this.byId.values()].filter((c) => c.clientId !== this.adminClientId).map((c) => structuredClone(c));
  }

  /** The client with this clientId, if held. */
  client(clientId: string): FakeClient | undefined {
    const c = this.findByClientId(clientId);
    return c && structuredClone(c);
  }

  /** Requests received on a route. */
  requestsTo(route: KeycloakRoute): RecordedRequest[] {
    return this.requests.filter((r) => r.route === route);
  }

  /** How many tokens the token endpoint has issued. */
  get tokensIssued(): number {
    return this.tokens.size;
  }

  /** Every access token issued (to check that none leaks into logs). */
  accessTokens(): string[] {
    return [...this.tokens.keys()];
  }

  // ---- set-up and faults ---------------------------------------------------

  /** Adds a client directly (as an operator or an earlier run would have). */
  seedClient(c: Partial<FakeClient> & { clientId: string }): FakeClient {
    const client: FakeClient = {
      id: randomUUID(),
      name: "",
      enabled: true,
      publicClient: false,
      bearerOnly: false,
      serviceAccountsEnabled: false,
      standardFlowEnabled: true,
      directAccessGrantsEnabled: false,
      protocol: "openid-connect",
      secret: randomSecret(),
      rotatedSecret: undefined,
      attributes: {},
      roles: [],
      posted: undefined,
      ...c,
    };
    this.byId.set(client.id, client);
    return structuredClone(client);
  }

  /** The next `times` requests to `route` meet `fault`. Faults queue in order. */
  inject(route: KeycloakRoute, fault: KeycloakFault, times = 1): void {
    const queue = this.faults.get(route) ?? [];
    for (let i = 0; i < times; i++) queue.push(fault);
    this.faults.set(route, queue);
  }

  /** The next `times` requests to `route` answer `status`; 429 and 503 carry Retry-After when given. */
  failNext(route: KeycloakRoute, status: number, options: { times?: number; retryAfter?: string; body?: unknown } = {}): void {
    const headers = options.retryAfter ? { "retry-after": options.retryAfter } : undefined;
    this.inject(route, { kind: "status", status, ...(headers ? { headers } : {}), ...(options.body !== undefined ? { body: options.body } : {}) }, options.times ?? 1);
  }

  /** Removes pending faults. */
  clearFaults(): void {
    this.faults.clear();
  }

  /** Ends every issued token now, as if its lifetime had run out; the admin API then answers 401. */
  expireTokens(): void {
    const now = this.clock();
    for (const t of this.tokens.values()) t.expiresAt = Math.min(t.expiresAt, now - 1);
  }

  /** Revokes every issued token (e.g. a Keycloak restart with new keys). */
  revokeTokens(): void {
    for (const t of this.tokens.values()) t.revoked = true;
  }

  /** Sets the service-account roles of a client (tokens issued later carry them). */
  setRoles(clientId: string, roles: string[]): void {
    const c = this.findByClientId(clientId);
    if (!c) throw new Error(`no client ${clientId}`);
    c.roles = [...roles];
  }

  /** Closes the listener and every connection but keeps the port: new connections are refused. */
  async refuseConnections(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
    // Let the client side notice its pooled sockets closed before the next request.
    await new Promise((r) => setTimeout(r, 20));
  }

  /** Listens again on the same port. */
  async acceptConnections(): Promise<void> {
    if (!this.listening) await this.listen(this.port);
  }

  /** Stops the server, dropping open connections and pending delays. */
  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.refuseConnections();
  }

  // ---- the server ----------------------------------------------------------

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", () => {
        this.server.off("error", reject);
        this.port = (this.server.address() as AddressInfo).port;
        this.listening = true;
        resolve();
      });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    const url = new URL(req.url ?? "/", this.url);
    const match = this.route(req.method ?? "GET", url.pathname);
    this.requests.push({
      route: match?.route ?? "unknown",
      method: req.method ?? "",
      url: req.url ?? "",
      path: url.pathname,
      headers: { ...req.headers },
      body,
      at: Date.now(),
    });
    if (!match) {
      send(res, 404, { error: "Unable to find matching target resource method" });
      return;
    }
    let conflictAfterCreate = false;
    const fault = this.faults.get(match.route)?.shift();
    if (fault?.kind === "drop") {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === "status") {
      send(res, fault.status, fault.body ?? defaultFaultBody(fault.status, match.route), fault.headers);
      return;
    }
    if (fault?.kind === "delay") {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.timers.delete(t);
          resolve();
        }, fault.ms);
        this.timers.add(t);
      });
    }
    if (fault?.kind === "conflictAfterCreate") conflictAfterCreate = true;
    // Past a delay the caller may have given up; the work is still done, as a real server would.
    if (match.route === "token") {
      this.token(req, body, res);
      return;
    }
    const caller = this.authenticate(req);
    if (!caller) {
      send(res, 401, { error: "HTTP 401 Unauthorized" });
      return;
    }
    const roles = new Set(caller.roles);
    const canManage = roles.has("manage-clients") || roles.has("realm-admin");
    const canView = canManage || roles.has("view-clients");
    const canList = canView || roles.has("query-clients");
    const forbidden = () => send(res, 403, { error: "HTTP 403 Forbidden" });
    switch (match.route) {
      case "create": {
        if (!canManage) return forbidden();
        this.create(req, body, res, conflictAfterCreate);
        return;
      }
      case "list": {
        if (!canList) return forbidden();
        send(res, 200, canView ? this.list(url.searchParams) : []);
        return;
      }
      default: {
        const client = this.byId.get(match.id ?? "");
        if (!client) {
          // Keycloak hides whether an id exists from callers who cannot list.
          if (!canList) return forbidden();
          send(res, 404, { error: "Could not find client" });
          return;
        }
        if (match.route === "get") {
          if (!canView) return forbidden();
          send(res, 200, representation(client));
          return;
        }
        if (!canManage) return forbidden();
        if (match.route === "delete") {
          this.byId.delete(client.id);
          send(res, 204);
          return;
        }
        if (match.route === "invalidateRotatedSecret") {
          // Keycloak removes the rotated secret (if any) whether or not the rotation feature is on.
          client.rotatedSecret = undefined;
          send(res, 204);
          return;
        }
        if (match.route === "regenerateSecret") {
          // Without a rotation policy Keycloak also drops any earlier rotation info.
          client.rotatedSecret = this.secretRotation ? client.secret : undefined;
          client.secret = randomSecret();
        }
        send(res, 200, { type: "secret", value: client.secret ?? "" });
      }
    }
  }

  private route(method: string, path: string): { route: KeycloakRoute; id?: string } | undefined {
    const realm = encodeURIComponent(this.realm);
    if (path === `/realms/${realm}/protocol/openid-connect/token`) return method === "POST" ? { route: "token" } : undefined;
    const prefix = `/admin/realms/${realm}/clients`;
    if (path === prefix) {
      if (method === "POST") return { route: "create" };
      if (method === "GET") return { route: "list" };
      return undefined;
    }
    if (!path.startsWith(`${prefix}/`)) return undefined;
    const rest = path.slice(prefix.length + 1).split("/");
    const id = decodeURIComponent(rest[0] ?? "");
    if (rest.length === 1) {
      if (method === "GET") return { route: "get", id };
      if (method === "DELETE") return { route: "delete", id };
    }
    if (rest.length === 2 && rest[1] === "client-secret") {
      if (method === "GET") return { route: "getSecret", id };
      if (method === "POST") return { route: "regenerateSecret", id };
    }
    if (rest.length === 3 && rest[1] === "client-secret" && rest[2] === "rotated" && method === "DELETE") {
      return { route: "invalidateRotatedSecret", id };
    }
    return undefined;
  }

  /** POST /realms/{realm}/protocol/openid-connect/token, client_credentials only. */
  private token(req: IncomingMessage, body: string, res: ServerResponse): void {
    const noStore = { "cache-control": "no-store", pragma: "no-cache" };
    const err = (status: number, error: string, description: string) => send(res, status, { error, error_description: description }, noStore);
    // Keycloak reads form parameters only from a form-encoded body.
    const isForm = (req.headers["content-type"] ?? "").toLowerCase().startsWith("application/x-www-form-urlencoded");
    const form = new URLSearchParams(isForm ? body : "");
    for (const key of new Set(form.keys())) {
      if (form.getAll(key).length > 1) return err(400, "invalid_request", "duplicated parameter");
    }
    const grantType = form.get("grant_type");
    if (!grantType) return err(400, "invalid_request", "Missing form parameter: grant_type");
    if (grantType !== "client_credentials") return err(400, "unsupported_grant_type", "Unsupported grant_type");
    // client_secret_basic (RFC 6749 §2.3.1: form-encoded id and secret) or client_secret_post; form wins.
    let basicId: string | undefined;
    let basicSecret: string | undefined;
    const authz = req.headers.authorization;
    if (authz?.toLowerCase().startsWith("basic ")) {
      const decoded = Buffer.from(authz.slice(6).trim(), "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon > 0) {
        basicId = formDecode(decoded.slice(0, colon));
        basicSecret = formDecode(decoded.slice(colon + 1));
      }
    }
    const clientId = form.get("client_id") ?? basicId;
    const secret = form.get("client_secret") ?? basicSecret;
    if (!clientId) return err(400, "invalid_client", "Missing client_id parameter");
    const client = this.findByClientId(clientId);
    if (!client || !client.enabled) return err(401, "invalid_client", "Invalid client or Invalid client credentials");
    if (client.bearerOnly) return err(400, "invalid_client", "Bearer-only not allowed");
    if (client.publicClient) return err(401, "unauthorized_client", "Public client not allowed to retrieve service account");
    // The primary secret, or (under a rotation policy) the rotated one.
    if (!secret || (secret !== client.secret && secret !== client.rotatedSecret)) {
      return err(401, "unauthorized_client", "Invalid client or Invalid client credentials");
    }
    if (!client.serviceAccountsEnabled) return err(401, "unauthorized_client", "Client not enabled to retrieve service account");
    const now = this.clock();
    const lifetime = this.tokenLifetimeSec;
    const claims = {
      exp: Math.floor(now / 1000) + lifetime,
      iat: Math.floor(now / 1000),
      jti: randomUUID(),
      iss: `${this.url}/realms/${this.realm}`,
      azp: client.clientId,
      typ: "Bearer",
      resource_access: { "realm-management": { roles: client.roles } },
    };
    const accessToken = [b64({ alg: "RS256", typ: "JWT" }), b64(claims), randomBytes(32).toString("base64url")].join(".");
    this.tokens.set(accessToken, { clientId: client.clientId, roles: [...client.roles], expiresAt: now + lifetime * 1000, revoked: false });
    send(
      res,
      200,
      { access_token: accessToken, expires_in: lifetime, refresh_expires_in: 0, token_type: "Bearer", "not-before-policy": 0, scope: "profile email" },
      noStore,
    );
  }

  private authenticate(req: IncomingMessage): IssuedToken | undefined {
    const authz = req.headers.authorization;
    if (!authz?.startsWith("Bearer ")) return undefined;
    const t = this.tokens.get(authz.slice(7).trim());
    if (!t || t.revoked || this.clock() >= t.expiresAt) return undefined;
    if (!this.findByClientId(t.clientId)) return undefined;
    return t;
  }

  /** POST /admin/realms/{realm}/clients. */
  private create(req: IncomingMessage, body: string, res: ServerResponse, conflictAfterCreate: boolean): void {
    if (!(req.headers["content-type"] ?? "").toLowerCase().startsWith(JSON_TYPE)) {
      send(res, 415, undefined);
      return;
    }
    let rep: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(body);
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
      rep = parsed as Record<string, unknown>;
    } catch {
      send(res, 400, { error: "unknown_error" });
      return;
    }
    const clientId = typeof rep.clientId === "string" ? rep.clientId : "";
    if (!clientId) {
      // Body shape for validation failures is not verified (EXTERNAL-APIS.md §1.2).
      send(res, 400, { error: "invalid_input", error_description: "Client ID is required" });
      return;
    }
    if (this.findByClientId(clientId)) {
      send(res, 409, { errorMessage: `Client ${clientId} already exists` });
      return;
    }
    const bool = (v: unknown, def: boolean) => (typeof v === "boolean" ? v : def);
    const publicClient = bool(rep.publicClient, false);
    const bearerOnly = bool(rep.bearerOnly, false);
    const attributes: Record<string, string> = {};
    if (typeof rep.attributes === "object" && rep.attributes !== null) {
      for (const [k, v] of Object.entries(rep.attributes)) attributes[k] = String(v);
    }
    const client: FakeClient = {
      id: typeof rep.id === "string" && rep.id ? rep.id : randomUUID(),
      clientId,
      name: typeof rep.name === "string" ? rep.name : "",
      enabled: bool(rep.enabled, true),
      publicClient,
      bearerOnly,
      serviceAccountsEnabled: bool(rep.serviceAccountsEnabled, false),
      standardFlowEnabled: bool(rep.standardFlowEnabled, true),
      directAccessGrantsEnabled: bool(rep.directAccessGrantsEnabled, false),
      protocol: typeof rep.protocol === "string" ? rep.protocol : "openid-connect",
      // Generated unless the client is public or bearer-only, or the caller chose one.
      secret: publicClient || bearerOnly ? undefined : typeof rep.secret === "string" && rep.secret ? rep.secret : randomSecret(),
      rotatedSecret: undefined,
      attributes,
      roles: [],
      posted: rep,
    };
    this.byId.set(client.id, client);
    if (conflictAfterCreate) {
      send(res, 409, { errorMessage: `Client ${clientId} already exists` });
      return;
    }
    res.writeHead(201, { location: `${this.url}/admin/realms/${encodeURIComponent(this.realm)}/clients/${client.id}`, "content-length": "0" });
    res.end();
  }

  /** GET /admin/realms/{realm}/clients: q (attributes, exact), clientId (exact, or substring with search=true), else all. */
  private list(params: URLSearchParams): unknown[] {
    let found: FakeClient[];
    const q = params.get("q");
    const clientId = params.get("clientId");
    const all = [...this.byId.values()].sort((a, b) => a.clientId.localeCompare(b.clientId));
    let paginate = true;
    if (q !== null) {
      const wanted = parseSearchQuery(q);
      found = all.filter((c) => Object.entries(wanted).every(([k, v]) => c.attributes[k] === v));
    } else if (!clientId?.trim()) {
      found = all;
    } else if (params.get("search") === "true") {
      found = all.filter((c) => c.clientId.toLowerCase().includes(clientId.toLowerCase()));
    } else {
      found = all.filter((c) => c.clientId === clientId);
      paginate = false;
    }
    if (paginate) {
      const first = Math.max(0, Number(params.get("first") ?? 0) || 0);
      const maxRaw = params.get("max");
      const max = maxRaw === null ? -1 : Number(maxRaw);
      found = found.slice(first, max >= 0 ? first + max : undefined);
    }
    return found.map(representation);
  }

  private findByClientId(clientId: string): FakeClient | undefined {
    for (const c of this.byId.values()) if (c.clientId === clientId) return c;
    return undefined;
  }
}

/** A ClientRepresentation as Keycloak returns it to a caller with manage-clients. */
function representation(c: FakeClient): Record<string, unknown> {
  return {
    id: c.id,
    clientId: c.clientId,
    name: c.name,
    surrogateAuthRequired: false,
    enabled: c.enabled,
    alwaysDisplayInConsole: false,
    clientAuthenticatorType: "client-secret",
    ...(c.secret !== undefined ? { secret: c.secret } : {}),
    redirectUris: [],
    webOrigins: [],
    notBefore: 0,
    bearerOnly: c.bearerOnly,
    consentRequired: false,
    standardFlowEnabled: c.standardFlowEnabled,
    implicitFlowEnabled: false,
    directAccessGrantsEnabled: c.directAccessGrantsEnabled,
    serviceAccountsEnabled: c.serviceAccountsEnabled,
    publicClient: c.publicClient,
    frontchannelLogout: true,
    protocol: c.protocol,
    attributes: { ...c.attributes },
    authenticationFlowBindingOverrides: {},
    fullScopeAllowed: true,
    nodeReRegistrationTimeout: -1,
    defaultClientScopes: ["web-origins", "acr", "profile", "roles", "basic", "email"],
    optionalClientScopes: ["address", "phone", "offline_access", "organization", "microprofile-jwt"],
    access: { view: true, configure: true, manage: true },
  };
}

/** Keycloak's `q` syntax: space-separated key:value pairs; keys and values may be "quoted" with \-escapes. */
export function parseSearchQuery(q: string): Record<string, string> {
  const out: Record<string, string> = {};
  const token = String.raw`(?:"((?:\\.|[^"\\])*)"|([^\s:"][^\s:]*))`;
  const pair = new RegExp(String.raw`(?:^|\s)${token}:(?:"((?:\\.|[^"\\])*)"|(\S+))`, "g");
  const unescape = (s: string) => s.replace(/\\(.)/g, "$1");
  for (const m of q.matchAll(pair)) {
    const key = m[1] !== undefined ? unescape(m[1]) : (m[2] ?? "");
    const value = m[3] !== undefined ? unescape(m[3]) : (m[4] ?? "");
    out[key] = value;
  }
  return out;
}

function defaultFaultBody(status: number, route: KeycloakRoute): unknown {
  if (status === 401) return route === "token" ? { error: "invalid_client", error_description: "Invalid client or Invalid client credentials" } : { error: "HTTP 401 Unauthorized" };
  if (status === 403) return { error: "HTTP 403 Forbidden" };
  if (status === 404) return { error: "Could not find client" };
  if (status === 429) return "Too Many Requests";
  return { error: "unknown_error" };
}

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  if (res.destroyed || res.headersSent) return;
  if (body === undefined) {
    res.writeHead(status, { "content-length": "0", ...headers });
    res.end();
    return;
  }
  const text = typeof body === "string" ? body : JSON.stringify(body);
  const type = typeof body === "string" ? "text/plain" : JSON_TYPE;
  res.writeHead(status, { "content-type": type, "content-length": String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function formDecode(s: string): string {
  return decodeURIComponent(s.replace(/\+/g, " "));
}

function b64(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString("base64url");
}

/** Keycloak's generated client secrets are 32 alphanumeric characters. */
function randomSecret(): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(32);
  let s = "";
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}

// ---- harness for the cross-driver conformance suite ------------------------

export interface KeycloakHarness {
  registrar: AgentRegistrar;
  fake: KeycloakFake;
  /** What the fake IdP holds: every client the broker tagged as governed. */
  identities(): Promise<{ delegationId: string; clientId: string }[]>;
  /** Whether the token endpoint issues a token for these client credentials (client_credentials grant). */
  secretWorks(clientId: string, secret: string): Promise<boolean>;
  close(): Promise<void>;
}

/** Status of a client_credentials token request (client_secret_post) to the fake. */
export async function tokenStatus(fake: KeycloakFake, clientId: string, secret: string): Promise<number> {
  const res = await fetch(`${fake.url}/realms/${encodeURIComponent(fake.realm)}/protocol/openid-connect/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: clientId, client_secret: secret }).toString(),
  });
  await res.arrayBuffer();
  return res.status;
}

/** Starts a fake Keycloak and a registrar pointed at it, with short, test-friendly HTTP timings. */
export async function startKeycloakHarness(
  options: { fake?: KeycloakFakeOptions; http?: Partial<Omit<HttpClientOptions, "system">>; log?: Logger; pageSize?: number } = {},
): Promise<KeycloakHarness> {
  const fake = await KeycloakFake.start(options.fake);
  const http = new HttpClient({ system: "keycloak", timeoutMs: 2_000, deadlineMs: 5_000, maxRetries: 2, minBackoffMs: 5, maxBackoffMs: 50, ...options.http });
  const registrar = createKeycloakRegistrar({
    url: fake.url,
    realm: fake.realm,
    adminClientId: fake.adminClientId,
    adminClientSecret: fake.adminClientSecret,
    http,
    ...(options.log ? { log: options.log } : {}),
    ...(options.pageSize ? { pageSize: options.pageSize } : {}),
  });
  return {
    registrar,
    fake,
    async identities() {
      return fake
        .clients()
        .filter((c) => c.attributes.llm_broker_governed === "true")
        .map((c) => ({ delegationId: c.attributes.delegation_id ?? "", clientId: c.clientId }));
    },
    async secretWorks(clientId, secret) {
      return (await tokenStatus(fake, clientId, secret)) === 200;
    },
    async close() {
      await registrar.close();
      await http.close();
      await fake.close();
    },
  };
}
