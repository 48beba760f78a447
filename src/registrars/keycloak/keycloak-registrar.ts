/**
 * The Keycloak registrar: one confidential client per delegation, created and
 * deleted through the Admin REST API (Keycloak 26.x) with the broker's own
 * service-account token.
 *
 * Every call goes through HttpClient, which owns deadlines and safe retries;
 * this file decides what each answer means. Secrets (the broker's and the
 * agents') never enter an error message or a log line.
 */
import { HttpClient } from "../../clients/http/http-client.js";
import type { HttpClientOptions, HttpResponse } from "../../clients/http/http-client.js";
import { BrokerError, invalidArgument, UpstreamError } from "../../domain/index.js";
import type { Logger } from "../../logging.js";
import type { AgentIdentity, AgentIdentityRef, AgentRegistrar, RegisterAgentRequest } from "../registrar.js";

export interface KeycloakRegistrarOptions {
  /** Base URL of Keycloak, e.g. https://sso.example.com (no /admin, no /realms). */
  url: string;
  realm: string;
  /** The broker's confidential client; its service account needs realm-management `manage-clients`. */
  adminClientId: string;
  adminClientSecret: string;
  /** By default, a new HttpClient for system "keycloak" (built from `httpOptions`), closed by close(). */
  http?: HttpClient;
  /** Options of the default HttpClient. Ignored when `http` is given. */
  httpOptions?: Omit<HttpClientOptions, "system">;
  /** Milliseconds since the epoch; decides when the cached admin token is renewed. By default, Date.now. */
  clock?: () => number;
  /** Clients fetched per page by listAgents. By default, 100. */
  pageSize?: number;
  log?: Logger;
}

/** The attribute that marks a client as created by this broker (listAgents searches for it). */
export const GOVERNED_ATTRIBUTE = "llm_broker_governed";

/** The Keycloak clientId of a delegation's agent. Deterministic, so a retried create finds its own leftover. */
export function keycloakClientId(agentType: string, delegationId: string): string {
  return `agent-${agentType}-${delegationId}`;
}

/**
 * How long before its expiry a cached admin token is renewed: 10% of its
 * lifetime, at most 30 s. A 300 s token (Keycloak's default) is used for 270 s.
 */
export function tokenRenewalMarginMs(expiresInSec: number): number {
  return Math.min(30_000, expiresInSec * 100);
}

/** The part of Keycloak's ClientRepresentation this driver reads. */
interface ClientRepresentation {
  id?: string;
  clientId?: string;
  attributes?: Record<string, string>;
}

interface CachedToken {
  value: string;
  renewAt: number;
}

const SYSTEM = "keycloak";
const DETAIL_MAX = 200;

/** Creates the Keycloak registrar. */
export function createKeycloakRegistrar(options: KeycloakRegistrarOptions): AgentRegistrar {
  return new KeycloakRegistrar(options);
}

class KeycloakRegistrar implements AgentRegistrar {
  readonly backend = "keycloak" as const;
  private readonly http: HttpClient;
  private readonly ownsHttp: boolean;
  private readonly clock: () => number;
  private readonly log: Logger | undefined;
  private readonly pageSize: number;
  private readonly tokenUrl: string;
  private readonly adminUrl: string;
  private token: CachedToken | undefined;
  private tokenInFlight: Promise<CachedToken> | undefined;

  constructor(private readonly options: KeycloakRegistrarOptions) {
    this.ownsHttp = options.http === undefined;
    this.http = options.http ?? new HttpClient({ ...options.httpOptions, system: SYSTEM });
    this.clock = options.clock ?? Date.now;
    this.log = options.log;
    this.pageSize = options.pageSize ?? 100;
    const base = options.url.replace(/\/+$/, "");
    const realm = encodeURIComponent(options.realm);
    this.tokenUrl = `${base}/realms/${realm}/protocol/openid-connect/token`;
    this.adminUrl = `${base}/admin/realms/${realm}`;
  }

  async registerAgent(req: RegisterAgentRequest): Promise<AgentIdentity> {
    const clientId = keycloakClientId(req.agentType, req.delegationId);
    const representation = {
      clientId,
      name: req.displayName,
      enabled: true,
      serviceAccountsEnabled: true,
      directAccessGrantsEnabled: false,
      standardFlowEnabled: false,
      publicClient: false,
      protocol: "openid-connect",
      attributes: {
        agent_type: req.agentType,
        delegator_did: req.delegatorDid,
        delegation_id: req.delegationId,
        expires_at: new Date(req.expireTime).toISOString(),
        [GOVERNED_ATTRIBUTE]: "true",
      },
    };
    // Not idempotent: HttpClient repeats it only when Keycloak provably did not
    // process it (connection refused, 429). An ambiguous failure surfaces; the
    // caller's retry then meets 409 and adopts the client below.
    const res = await this.admin({ method: "POST", path: "/clients", json: representation }, `creating client ${clientId}`);
    if (res.status === 201) {
      const objectId = idFromLocation(res.headers.location);
      if (!objectId) {
        throw new UpstreamError(SYSTEM, "malformed", `keycloak created client ${clientId} but sent no usable Location header`, { status: res.status });
      }
      const clientSecret = await this.clientSecret(objectId, "GET", clientId);
      this.log?.info({ delegationId: req.delegationId, clientId, objectId }, "keycloak: registered agent client");
      return { clientId, clientSecret, objectId, displayName: req.displayName };
    }
    if (res.status === 409) return this.adopt(req, clientId);
    throw this.rejected(res, `creating client ${clientId}`);
  }

  /**
   * A 409 means the client exists: normally one an interrupted attempt for this
   * same delegation left behind. Take it over with a fresh secret (nobody may
   * have seen the first one); refuse one tagged with another delegation.
   */
  private async adopt(req: RegisterAgentRequest, clientId: string): Promise<AgentIdentity> {
    const existing = await this.findByClientId(clientId);
    if (!existing?.id) {
      throw new UpstreamError(SYSTEM, "status", `keycloak reported client ${clientId} as existing but does not list it; retry`, {
        status: 409,
        reason: "KEYCLOAK_REJECTED",
      });
    }
    const owner = existing.attributes?.delegation_id;
    if (owner !== req.delegationId) {
      throw new UpstreamError(SYSTEM, "rejected", `keycloak client ${clientId} already exists and is not this delegation's; it was left untouched`, {
        reason: "KEYCLOAK_CLIENT_CONFLICT",
        metadata: { client_id: clientId },
      });
    }
    const clientSecret = await this.clientSecret(existing.id, "POST", clientId);
    this.log?.warn(
      { delegationId: req.delegationId, clientId, objectId: existing.id },
      "keycloak: adopted the client an interrupted attempt left, with a new secret",
    );
    return { clientId, clientSecret, objectId: existing.id, displayName: req.displayName };
  }

  /** Reads (GET) or regenerates (POST) a client's secret. */
  private async clientSecret(objectId: string, method: "GET" | "POST", clientId: string): Promise<string> {
    const what = method === "GET" ? `reading the secret of client ${clientId}` : `regenerating the secret of client ${clientId}`;
    // Reading is repeatable. Regenerating is repeated only when Keycloak provably did not
    // process it (connection refused, 429), as for create: after a timeout, a dropped
    // connection or a 5xx (a proxy's 502/504 while Keycloak still works) the earlier
    // attempt may land after the repeat and silently replace the secret it answered with.
    const res = await this.admin({ method, path: `/clients/${encodeURIComponent(objectId)}/client-secret`, idempotent: method === "GET" }, what);
    if (res.status !== 200) throw this.rejected(res, what);
    const body = this.http.json<{ value?: unknown }>(res);
    if (typeof body?.value !== "string" || body.value === "") {
      throw new UpstreamError(SYSTEM, "malformed", `keycloak answered ${what} without a secret`, { status: res.status });
    }
    return body.value;
  }

  /**
   * Regenerates the client's secret, then ends the previous one's grace: a
   * client-secret-rotation policy keeps it valid as "rotated" (for two days by
   * default) unless invalidated. Only a governed client tagged with this
   * delegation is touched.
   */
  async rotateSecret(ref: AgentIdentityRef): Promise<string> {
    const client = await this.findOne(ref);
    const name = client?.clientId || ref.clientId || ref.objectId || ref.delegationId;
    if (!client?.id) throw gone(name, ref);
    if (client.attributes?.[GOVERNED_ATTRIBUTE] !== "true" || (ref.delegationId && client.attributes.delegation_id !== ref.delegationId)) {
      this.log?.warn({ delegationId: ref.delegationId, clientId: client.clientId, objectId: client.id }, "keycloak: client is not this delegation's; not rotating its secret");
      throw new UpstreamError(SYSTEM, "rejected", `keycloak client ${name} is not this delegation's; its secret was left untouched`, {
        reason: "KEYCLOAK_CLIENT_CONFLICT",
        metadata: { client_id: name },
      });
    }
    let clientSecret: string;
    try {
      clientSecret = await this.clientSecret(client.id, "POST", name);
      await this.invalidateRotatedSecret(client.id, name);
    } catch (err) {
      // Deleted between the lookup and the regeneration.
      if (err instanceof UpstreamError && err.status === 404) throw gone(name, ref);
      throw err;
    }
    this.log?.info({ delegationId: ref.delegationId, clientId: client.clientId, objectId: client.id }, "keycloak: rotated the agent client's secret");
    return clientSecret;
  }

  /** Ends a rotated (previous) secret at once. Keycloak answers 204 whether or not there is one, rotation feature on or off. */
  private async invalidateRotatedSecret(objectId: string, clientId: string): Promise<void> {
    const what = `invalidating the rotated secret of client ${clientId}`;
    const res = await this.admin({ method: "DELETE", path: `/clients/${encodeURIComponent(objectId)}/client-secret/rotated` }, what);
    if (res.status !== 204 && res.status !== 200) throw this.rejected(res, what);
  }

  /** The client a reference names: by object id, else clientId, else delegation id; undefined when there is none. */
  private async findOne(ref: AgentIdentityRef): Promise<ClientRepresentation | undefined> {
    if (ref.objectId) {
      const what = `reading client ${ref.clientId || ref.objectId}`;
      const res = await this.admin({ method: "GET", path: `/clients/${encodeURIComponent(ref.objectId)}` }, what);
      if (res.status === 404) return undefined;
      if (res.status !== 200) throw this.rejected(res, what);
      const body = this.http.json<unknown>(res);
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new UpstreamError(SYSTEM, "malformed", `keycloak answered ${what} with something other than a client`, { status: res.status });
      }
      return body as ClientRepresentation;
    }
    if (ref.clientId) return this.findByClientId(ref.clientId);
    if (!ref.delegationId) throw invalidArgument("delegation_id", "an identity needs an object id, a client id or a delegation id");
    const tagged = (await this.search(`delegation_id:${quoteSearchValue(ref.delegationId)}`, 0, this.pageSize)).filter(
      (c) => c.id && c.attributes?.delegation_id === ref.delegationId,
    );
    if (tagged.length > 1) {
      throw new UpstreamError(SYSTEM, "rejected", `keycloak holds ${tagged.length} clients tagged with delegation ${ref.delegationId}; not choosing one`, {
        reason: "KEYCLOAK_CLIENT_CONFLICT",
        metadata: { delegation_id: ref.delegationId },
      });
    }
    return tagged[0];
  }

  async deleteAgent(ref: AgentIdentityRef): Promise<void> {
    if (ref.objectId) {
      await this.deleteById(ref.objectId, ref);
      return;
    }
    let targets: ClientRepresentation[];
    if (ref.clientId) {
      const found = await this.findByClientId(ref.clientId);
      targets = found ? [found] : [];
    } else if (ref.delegationId) {
      targets = await this.search(`delegation_id:${quoteSearchValue(ref.delegationId)}`, 0, this.pageSize);
    } else {
      throw invalidArgument("delegation_id", "an identity to delete needs an object id, a client id or a delegation id");
    }
    for (const c of targets) {
      if (!c.id) continue;
      // Delete only what this broker created for this delegation: a client found
      // by name but tagged otherwise is someone else's.
      if (ref.delegationId && c.attributes?.delegation_id !== ref.delegationId) {
        this.log?.warn({ delegationId: ref.delegationId, clientId: c.clientId, objectId: c.id }, "keycloak: client is tagged with another delegation; not deleting it");
        continue;
      }
      await this.deleteById(c.id, ref);
    }
  }

  private async deleteById(objectId: string, ref: AgentIdentityRef): Promise<void> {
    const what = `deleting client ${ref.clientId || objectId}`;
    const res = await this.admin({ method: "DELETE", path: `/clients/${encodeURIComponent(objectId)}` }, what);
    if (res.status === 404) {
      this.log?.info({ delegationId: ref.delegationId, clientId: ref.clientId, objectId }, "keycloak: agent client already gone");
      return;
    }
    if (res.status !== 204 && res.status !== 200) throw this.rejected(res, what);
    this.log?.info({ delegationId: ref.delegationId, clientId: ref.clientId, objectId }, "keycloak: deleted agent client");
  }

  async *listAgents(): AsyncIterable<AgentIdentityRef> {
    // Read every page before yielding: the orphan sweep deletes while it
    // iterates, and offset paging over a shrinking list would skip clients.
    const seen = new Map<string, AgentIdentityRef>();
    for (let first = 0; ; first += this.pageSize) {
      const page = await this.search(`${GOVERNED_ATTRIBUTE}:true`, first, this.pageSize);
      let added = 0;
      for (const c of page) {
        // Re-checked here: a Keycloak that ignored `q` would list every client.
        if (!c.id || c.attributes?.[GOVERNED_ATTRIBUTE] !== "true" || seen.has(c.id)) continue;
        seen.set(c.id, { delegationId: c.attributes.delegation_id ?? "", clientId: c.clientId ?? "", objectId: c.id });
        added++;
      }
      // A short page ends the list; so does a page with nothing new (paging ignored).
      if (page.length < this.pageSize || added === 0) break;
    }
    yield* seen.values();
  }

  async close(): Promise<void> {
    if (this.ownsHttp) await this.http.close();
  }

  /** The client with exactly this clientId, if any. */
  private async findByClientId(clientId: string): Promise<ClientRepresentation | undefined> {
    const list = await this.listClients(`clientId=${encodeURIComponent(clientId)}`, `looking up client ${clientId}`);
    return list.find((c) => c.clientId === clientId);
  }

  /** One page of an attribute search (`q=key:value`). */
  private search(q: string, first: number, max: number): Promise<ClientRepresentation[]> {
    return this.listClients(`q=${encodeURIComponent(q)}&first=${first}&max=${max}`, `searching clients (${q})`);
  }

  private async listClients(query: string, what: string): Promise<ClientRepresentation[]> {
    const res = await this.admin({ method: "GET", path: `/clients?${query}` }, what);
    if (res.status !== 200) throw this.rejected(res, what);
    const body = this.http.json<unknown>(res);
    if (!Array.isArray(body)) throw new UpstreamError(SYSTEM, "malformed", `keycloak answered ${what} with something other than a list`, { status: res.status });
    return body.filter((c): c is ClientRepresentation => typeof c === "object" && c !== null);
  }

  /**
   * An Admin API call with the cached token. A 401 means the token died early
   * (revoked, server restarted, clock skew): renew it once and repeat once.
   * Repeating is safe for any method, since a 401 was not processed.
   */
  private async admin(
    req: { method: "GET" | "POST" | "DELETE"; path: string; json?: unknown; idempotent?: boolean },
    what: string,
  ): Promise<HttpResponse> {
    const send = (token: string) =>
      this.http.send({
        method: req.method,
        url: `${this.adminUrl}${req.path}`,
        headers: { authorization: `Bearer ${token}` },
        ...(req.json !== undefined ? { json: req.json } : {}),
        ...(req.idempotent !== undefined ? { idempotent: req.idempotent } : {}),
      });
    const first = await this.adminToken();
    const res = await send(first);
    if (res.status !== 401) return res;
    this.log?.info({ system: SYSTEM }, "keycloak: admin token rejected; renewing it once");
    this.dropToken(first);
    const retry = await send(await this.adminToken());
    if (retry.status === 401) {
      throw new UpstreamError(SYSTEM, "credentials", `keycloak answered 401 to ${what} with a freshly issued admin token`, {
        status: 401,
        reason: "KEYCLOAK_REJECTED",
      });
    }
    return retry;
  }

  /** The cached admin token, or a new one; concurrent callers share one token request. */
  private async adminToken(): Promise<string> {
    if (this.token && this.clock() < this.token.renewAt) return this.token.value;
    this.tokenInFlight ??= this.requestToken().finally(() => {
      this.tokenInFlight = undefined;
    });
    const token = await this.tokenInFlight;
    return token.value;
  }

  /** Forgets `value` if it is still the cached token (another caller may already have renewed it). */
  private dropToken(value: string): void {
    if (this.token?.value === value) this.token = undefined;
  }

  private async requestToken(): Promise<CachedToken> {
    const sentAt = this.clock();
    // Asking for a token again is harmless, so timeouts and 5xx are retried.
    const res = await this.http.send({
      method: "POST",
      url: this.tokenUrl,
      form: {
        grant_type: "client_credentials",
        client_id: this.options.adminClientId,
        client_secret: this.options.adminClientSecret,
      },
      idempotent: true,
    });
    if (res.status === 200) {
      const body = this.http.json<{ access_token?: unknown; expires_in?: unknown }>(res);
      if (typeof body?.access_token !== "string" || body.access_token === "") {
        throw new UpstreamError(SYSTEM, "malformed", "keycloak's token endpoint answered 200 without an access_token", { status: res.status });
      }
      const expiresIn = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : 60;
      const token = { value: body.access_token, renewAt: sentAt + expiresIn * 1000 - tokenRenewalMarginMs(expiresIn) };
      this.token = token;
      this.log?.debug({ system: SYSTEM, expiresInSec: expiresIn }, "keycloak: admin token issued");
      return token;
    }
    const error = oauthError(res);
    // Keycloak says unauthorized_client for a wrong or missing secret and
    // invalid_client for an unknown or disabled client: both are bad credentials.
    if (res.status === 401 || error === "invalid_client" || error === "unauthorized_client") {
      throw new UpstreamError(
        SYSTEM,
        "credentials",
        `keycloak rejected the broker's admin client credentials (client ${this.options.adminClientId}, realm ${this.options.realm}): ` +
          `${res.status}${error ? ` ${this.scrub(error)}` : ""}`,
        { status: res.status, reason: "KEYCLOAK_CREDENTIALS_REJECTED" },
      );
    }
    throw this.rejected(res, "the admin token request");
  }

  /**
   * An answer this driver has no use for, with the status and Keycloak's own
   * words. 401/403 are the broker's own credentials or roles (retryable once an
   * operator fixes them); another 4xx refuses this request for good.
   */
  private rejected(res: HttpResponse, what: string): UpstreamError {
    const said = keycloakMessage(res);
    const hint = res.status === 403 ? " (the broker's service account needs the realm-management role manage-clients)" : "";
    const failure = res.status === 401 || res.status === 403 ? "credentials" : res.status >= 500 ? "status" : "rejected";
    return new UpstreamError(SYSTEM, failure, `keycloak answered ${res.status} to ${what}${said ? `: ${this.scrub(said)}` : ""}${hint}`, {
      status: res.status,
      reason: "KEYCLOAK_REJECTED",
    });
  }

  /** Keeps Keycloak's words short and free of the broker's secret, should it ever echo it. */
  private scrub(text: string): string {
    const secret = this.options.adminClientSecret;
    const clean = secret ? text.split(secret).join("[redacted]") : text;
    return clean.length > DETAIL_MAX ? `${clean.slice(0, DETAIL_MAX)}…` : clean;
  }
}

/** The identity a rotation was asked for no longer exists: nothing to retry. */
function gone(name: string, ref: AgentIdentityRef): UpstreamError {
  return new UpstreamError(SYSTEM, "rejected", `keycloak client ${name} no longer exists; the delegation's identity is gone`, {
    reason: "KEYCLOAK_CLIENT_GONE",
    metadata: { ...(ref.delegationId ? { delegation_id: ref.delegationId } : {}), ...(ref.clientId ? { client_id: ref.clientId } : {}) },
  });
}

/** The new client's id: the last path segment of the Location header. */
function idFromLocation(location: string | undefined): string | undefined {
  if (!location) return undefined;
  let path: string;
  try {
    path = new URL(location, "http://keycloak.invalid").pathname;
  } catch {
    return undefined;
  }
  const last = path.split("/").filter((s) => s !== "").pop();
  if (!last) return undefined;
  try {
    return decodeURIComponent(last);
  } catch {
    return undefined;
  }
}

function parseBody(res: HttpResponse): Record<string, unknown> | undefined {
  try {
    const body: unknown = JSON.parse(res.text);
    return typeof body === "object" && body !== null ? (body as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The OAuth2 `error` code of a token-endpoint answer, if any. */
function oauthError(res: HttpResponse): string {
  const e = parseBody(res)?.error;
  return typeof e === "string" ? e : "";
}

/** Keycloak's explanation: `errorMessage` (ErrorRepresentation) or `error`/`error_description` (OAuth2ErrorRepresentation). */
function keycloakMessage(res: HttpResponse): string {
  const body = parseBody(res);
  if (!body) return "";
  const parts = [body.errorMessage, body.error, body.error_description].filter((p): p is string => typeof p === "string" && p !== "");
  return parts.join(" - ");
}

/** A value for Keycloak's `q=key:value` search, quoted when it holds spaces or quotes. */
function quoteSearchValue(value: string): string {
  return /[\s"\\]/.test(value) ? `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"` : value;
}
