/**
 * The Entra registrar: one Microsoft Entra identity per delegation, created
 * and deleted through Microsoft Graph v1.0 with the broker's own app-only
 * token (client credentials, @azure/msal-node).
 *
 * Two shapes, chosen by `agentBlueprintId`:
 *
 * - Application (default): an application registration tagged with the
 *   delegation (`delegation_id:`, `delegator:`, `agent_type:`, `governed:true`,
 *   `HideApp`), a password whose endDateTime is the delegation's expiry (the
 *   credential cannot outlive it even if the broker never deletes it), and a
 *   service principal so the agent can sign in. Permission:
 *   Application.ReadWrite.OwnedBy.
 * - Entra Agent ID: an `agentIdentity` service principal of the blueprint,
 *   sponsored by `sponsorId`, with the same tags. An agent identity has no
 *   password of its own: the agent runtime authenticates as the blueprint and
 *   asks for the agent's token with `fmi_path`, so `clientSecret` is "". Its
 *   lifetime is bounded by the broker deleting it when the delegation ends.
 *   Permission: AgentIdentity.Create.All (plus DeleteRestore to purge).
 *
 * Every HTTP call, MSAL's included (a custom INetworkModule), goes through
 * HttpClient, which owns deadlines and safe retries; this file decides what
 * each answer means. Graph errors are told apart by status and `error.code`,
 * never by message. Secrets (the broker's and the agents') never enter an
 * error message or a log line.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  AuthError,
  ConfidentialClientApplication,
  LogLevel,
  ServerError,
  type INetworkModule,
  type NetworkRequestOptions,
  type NetworkResponse,
} from "@azure/msal-node";
import { HttpClient } from "../../clients/http/http-client.js";
import type { HttpClientOptions, HttpRequest, HttpResponse } from "../../clients/http/http-client.js";
import { BrokerError, UpstreamError, invalidArgument } from "../../domain/index.js";
import type { Logger } from "../../logging.js";
import type { AgentIdentity, AgentIdentityRef, AgentRegistrar, RegisterAgentRequest } from "../registrar.js";

export interface EntraRegistrarOptions {
  /** Directory (tenant) id; `common`/`organizations` are refused by MSAL for client credentials. */
  tenantId: string;
  /** The broker's own application (client) id. */
  clientId: string;
  clientSecret: string;
  /** Authority host, https. By default, https://login.microsoftonline.com. */
  authorityHost?: string;
  /** Graph base URL. By default, https://graph.microsoft.com/v1.0. */
  graphUrl?: string;
  /** When set, agents are Entra Agent ID identities of this blueprint (its appId). */
  agentBlueprintId?: string;
  /** Object id of the user that sponsors agent identities; required with `agentBlueprintId`. */
  sponsorId?: string;
  /** Also delete identities permanently from deleted items. By default, false (Entra purges after 30 days). */
  purgeDeleted?: boolean;
  /**
   * Extra CA certificate(s) (PEM) to trust, besides the public roots, for both
   * the authority and Graph. Used for the default HttpClient; an injected
   * `http` carries its own TLS settings.
   */
  ca?: string;
  /** By default, a new HttpClient for system "entra", closed by close(). */
  http?: HttpClient;
  /** Options of the default HttpClient. Ignored when `http` is given. */
  httpOptions?: Omit<HttpClientOptions, "system" | "ca">;
  log?: Logger;
}

/** The tag every identity this broker creates carries; listAgents filters on it. */
export const GOVERNED_TAG = "governed:true";
const DELEGATION_TAG = "delegation_id:";

/** Hosts MSAL knows (hard-coded cloud and endpoint metadata): no discovery, no knownAuthorities. */
const MICROSOFT_AUTHORITY_HOSTS = new Set([
  "login.microsoftonline.com",
  "login.windows.net",
  "login.microsoft.com",
  "sts.windows.net",
  "login.partner.microsoftonline.cn",
  "login.chinacloudapi.cn",
  "login.microsoftonline.de",
  "login.microsoftonline.us",
  "login.usgovcloudapi.net",
  "login-us.microsoftonline.com",
]);

/** Token-endpoint errors that mean the broker's own registration or secret is wrong. */
const CREDENTIAL_ERRORS = new Set([
  "invalid_client",
  "unauthorized_client",
  "invalid_grant",
  "invalid_request",
  "invalid_scope",
  "invalid_resource",
  "invalid_tenant",
]);

/**
 * Waits between attempts while a just-created application is not yet visible
 * to addPassword / servicePrincipals (directory replication). Safe to repeat:
 * the refused call created nothing.
 */
const CONSISTENCY_DELAYS_MS = [100, 200, 400, 800, 1_500];
const PAGE_SIZE = 100;

/** Graph's error body: `{"error":{"code","message","innerError":{...}}}`. */
interface GraphErrorBody {
  error?: { code?: string; innerError?: { "request-id"?: string } };
}

interface DirectoryObject {
  id: string;
  appId: string;
  displayName?: string;
  tags?: string[];
}

/** The part of an application rotateSecret reads. */
interface ApplicationPasswords extends DirectoryObject {
  notes?: string | null;
  passwordCredentials: { keyId: string; endDateTime?: string }[];
}

interface GraphCollection {
  value?: DirectoryObject[];
  "@odata.nextLink"?: string;
}

/** Where the network module leaves the transport failure MSAL swallows (it reports only `network_error`). */
interface TokenAttempt {
  failure?: unknown;
}

/** Creates the Entra registrar. */
export function createEntraRegistrar(options: EntraRegistrarOptions): AgentRegistrar {
  return new EntraRegistrar(options);
}

/** Single quotes doubled: an OData string literal. */
function odataString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

function httpsUrl(name: string, value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`Entra ${name} must be an https URL, got "${value}"`);
  }
  // MSAL refuses a non-https authority (authority_uri_insecure); Graph only speaks https.
  if (url.protocol !== "https:") throw new TypeError(`Entra ${name} must be an https URL, got "${value}"`);
  return url;
}

class EntraRegistrar implements AgentRegistrar {
  readonly backend = "entra" as const;
  private readonly http: HttpClient;
  private readonly ownsHttp: boolean;
  private readonly log: Logger | undefined;
  private readonly graphUrl: string;
  private readonly graphOrigin: string;
  private readonly scopes: string[];
  private readonly blueprintId: string;
  private readonly sponsorId: string;
  private readonly purgeDeleted: boolean;
  private readonly msal: ConfidentialClientApplication;
  private readonly attempts = new AsyncLocalStorage<TokenAttempt>();
  private tokenInFlight: Promise<string> | undefined;

  constructor(options: EntraRegistrarOptions) {
    for (const key of ["tenantId", "clientId", "clientSecret"] as const) {
      if (!options[key]) throw new TypeError(`Entra ${key} is required`);
    }
    const authority = httpsUrl("authorityHost", (options.authorityHost ?? "https://login.microsoftonline.com").replace(/\/+$/, ""));
    this.graphUrl = httpsUrl("graphUrl", (options.graphUrl ?? "https://graph.microsoft.com/v1.0").replace(/\/+$/, "")).href.replace(/\/+$/, "");
    this.graphOrigin = new URL(this.graphUrl).origin;
    this.scopes = [`${this.graphOrigin}/.default`];
    this.blueprintId = options.agentBlueprintId ?? "";
    this.sponsorId = options.sponsorId ?? "";
    if (this.blueprintId && !this.sponsorId) throw new TypeError("Entra agentBlueprintId needs sponsorId (agent identities must have a sponsor)");
    this.purgeDeleted = options.purgeDeleted ?? false;
    this.log = options.log;
    this.ownsHttp = options.http === undefined;
    this.http =
      options.http ??
      new HttpClient({
        ...options.httpOptions,
        system: "entra",
        ...(options.ca ? { ca: options.ca } : {}),
      });

    const microsoftHost = MICROSOFT_AUTHORITY_HOSTS.has(authority.hostname.toLowerCase());
    this.msal = new ConfidentialClientApplication({
      auth: {
        clientId: options.clientId,
        clientSecret: options.clientSecret,
        authority: `${authority.origin}/${options.tenantId}`,
        // Another host (a sovereign proxy, a test fake): trust it as its own cloud, so MSAL skips
        // instance discovery at login.microsoftonline.com and reads
        // <authority>/v2.0/.well-known/openid-configuration from the host itself (once per process).
        ...(microsoftHost ? {} : { knownAuthorities: [authority.host] }),
      },
      system: {
        networkClient: this.networkModule(),
        loggerOptions: {
          piiLoggingEnabled: false,
          logLevel: LogLevel.Warning,
          loggerCallback: (_level, message) => this.log?.debug({ component: "msal" }, message),
        },
      },
    });
  }

  // ---- tokens -------------------------------------------------------------

  /**
   * MSAL's transport: HttpClient (deadlines, retries, the extra CA). Token
   * requests create nothing, so they are retried like idempotent calls. Any
   * HTTP answer is handed to MSAL as is (it reads `error` and throttles after
   * 429/5xx); only a transport failure throws, and is remembered for the
   * caller because MSAL replaces it with a bare `network_error`.
   */
  private networkModule(): INetworkModule {
    const send = async <T>(method: "GET" | "POST", url: string, options?: NetworkRequestOptions, timeoutMs?: number): Promise<NetworkResponse<T>> => {
      // MSAL reads 429/5xx answers itself (error body, Retry-After for its throttle cache).
      const req: HttpRequest = { method, url, headers: { ...options?.headers }, idempotent: true, acceptRetryableStatus: true };
      if (options?.body !== undefined) req.body = options.body;
      if (timeoutMs) req.timeoutMs = timeoutMs;
      try {
        const res = await this.http.send(req);
        return { status: res.status, headers: res.headers, body: parseJson(res.text) as T };
      } catch (err) {
        const attempt = this.attempts.getStore();
        if (attempt) attempt.failure = err;
        throw err;
      }
    };
    return {
      sendGetRequestAsync: (url, options, timeout) => send("GET", url, options, timeout),
      sendPostRequestAsync: (url, options) => send("POST", url, options),
    };
  }

  /**
   * An app-only Graph token. MSAL caches it per process and renews it 5 min
   * before expiry; concurrent cold callers share one request. `fresh` skips
   * MSAL's cache (after Graph refused the cached token).
   */
  private token(fresh = false): Promise<string> {
    if (!fresh && this.tokenInFlight) return this.tokenInFlight;
    const pending = this.acquire(fresh).finally(() => {
      if (this.tokenInFlight === pending) this.tokenInFlight = undefined;
    });
    if (!fresh) this.tokenInFlight = pending;
    return pending;
  }

  private async acquire(fresh: boolean): Promise<string> {
    const attempt: TokenAttempt = {};
    try {
      const result = await this.attempts.run(attempt, () =>
        this.msal.acquireTokenByClientCredential({ scopes: this.scopes, skipCache: fresh }),
      );
      if (!result?.accessToken) throw new UpstreamError("entra", "malformed", "Entra returned no access token", { reason: "ENTRA_TOKEN_UNAVAILABLE" });
      return result.accessToken;
    } catch (err) {
      throw tokenError(err, attempt.failure);
    }
  }

  // ---- Graph --------------------------------------------------------------

  /** Sends a Graph request with the app token; on 401 renews the token once and repeats. */
  private async graph(req: Omit<HttpRequest, "url" | "headers"> & { url: string }): Promise<HttpResponse> {
    const url = req.url.startsWith("https://") ? req.url : `${this.graphUrl}${req.url}`;
    const send = async (token: string) => this.http.send({ ...req, url, headers: { authorization: `Bearer ${token}` } });
    const res = await send(await this.token());
    if (res.status !== 401) return res;
    this.log?.debug({ url: req.url }, "Graph refused the cached token; renewing it");
    return send(await this.token(true));
  }

  /** Repeats `send` while Graph answers as if a just-created object did not exist yet. */
  private async untilReplicated(operation: string, send: () => Promise<HttpResponse>, lagging: (res: HttpResponse) => boolean): Promise<HttpResponse> {
    for (let i = 0; ; i++) {
      const res = await send();
      const delay = CONSISTENCY_DELAYS_MS[i];
      if (!lagging(res) || delay === undefined) return res;
      this.log?.debug({ operation, status: res.status, code: graphCode(res) }, "new Entra object not replicated yet; retrying");
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  private object(res: HttpResponse, operation: string): DirectoryObject {
    const body = this.http.json<Partial<DirectoryObject>>(res);
    if (typeof body.id !== "string" || typeof body.appId !== "string") {
      throw new UpstreamError("entra", "malformed", `Graph's answer to ${operation} has no id/appId`, { status: res.status });
    }
    return body as DirectoryObject;
  }

  // ---- AgentRegistrar -----------------------------------------------------

  async registerAgent(req: RegisterAgentRequest): Promise<AgentIdentity> {
    const tags = [
      `agent_type:${req.agentType}`,
      `${DELEGATION_TAG}${req.delegationId}`,
      `delegator:${req.delegatorDid}`,
      GOVERNED_TAG,
      "HideApp",
    ];
    return this.blueprintId ? this.registerAgentIdentity(req, tags) : this.registerApplication(req, tags);
  }

  private async registerApplication(req: RegisterAgentRequest, tags: string[]): Promise<AgentIdentity> {
    const expires = new Date(req.expireTime).toISOString();
    const createRes = await this.graph({
      method: "POST",
      url: "/applications",
      json: {
        displayName: req.displayName,
        signInAudience: "AzureADMyOrg",
        tags,
        notes: `Governed AI agent (${req.agentModel || req.agentType}) of delegation ${req.delegationId}. Delegator: ${req.delegatorDid}. Expires: ${expires}.`,
      },
    });
    // A create that timed out may still have happened: the delegation_id tag lets deleteAgent
    // (by tag) and the orphan sweep (listAgents) find it without its ids.
    if (createRes.status !== 201) throw graphError("create application", createRes);
    const app = this.object(createRes, "create application");

    // From here on a failure must not leave the application behind.
    try {
      const { secretText } = await this.addPassword(app.id, req.delegationId, expires);

      const spRes = await this.untilReplicated(
        "create service principal",
        () => this.graph({ method: "POST", url: "/servicePrincipals", json: { appId: app.appId, tags } }),
        // 400 Request_BadRequest here is "appId does not reference a valid application object": the body
        // is ours and fixed, so a 400 means the application has not replicated yet.
        (res) => res.status === 404 || (res.status === 400 && graphCode(res) === "Request_BadRequest"),
      );
      if (spRes.status !== 201 && spRes.status !== 409) throw graphError("create service principal", spRes);

      this.log?.info({ delegationId: req.delegationId, clientId: app.appId, objectId: app.id }, "registered Entra application");
      return { clientId: app.appId, clientSecret: secretText, objectId: app.id, displayName: app.displayName ?? req.displayName };
    } catch (err) {
      try {
        await this.deleteObject("application", app.id);
      } catch (cleanupErr) {
        // Tagged with the delegation id, so the orphan sweep finds it later.
        this.log?.warn({ err: cleanupErr, delegationId: req.delegationId, objectId: app.id }, "could not delete a half-registered Entra application");
      }
      throw err;
    }
  }

  private async registerAgentIdentity(req: RegisterAgentRequest, tags: string[]): Promise<AgentIdentity> {
    const res = await this.graph({
      method: "POST",
      url: "/servicePrincipals/microsoft.graph.agentIdentity",
      json: {
        displayName: req.displayName,
        agentIdentityBlueprintId: this.blueprintId,
        "sponsors@odata.bind": [`${this.graphUrl}/users/${encodeURIComponent(this.sponsorId)}`],
        tags,
      },
    });
    if (res.status !== 201) throw graphError("create agent identity", res);
    const agent = this.object(res, "create agent identity");
    this.log?.info({ delegationId: req.delegationId, clientId: agent.appId, objectId: agent.id }, "registered Entra agent identity");
    // No password: the agent runtime gets its token through the blueprint (fmi_path).
    return { clientId: agent.appId, clientSecret: "", objectId: agent.id, displayName: agent.displayName ?? req.displayName };
  }

  /**
   * A password for the application, ending at `endDateTime`. Repeated while a
   * just-created application is not visible yet; otherwise not repeated (each
   * call adds a password), except where HttpClient knows it was not processed.
   */
  private async addPassword(objectId: string, delegationId: string, endDateTime: string): Promise<{ keyId: string; secretText: string }> {
    const res = await this.untilReplicated(
      "add password",
      () =>
        this.graph({
          method: "POST",
          url: `/applications/${encodeURIComponent(objectId)}/addPassword`,
          json: { passwordCredential: { displayName: `delegation-${delegationId}`, endDateTime } },
        }),
      (r) => r.status === 404,
    );
    if (res.status !== 200) throw graphError("add password", res);
    const { secretText, keyId } = this.http.json<{ secretText?: unknown; keyId?: unknown }>(res);
    if (typeof secretText !== "string" || secretText === "" || typeof keyId !== "string" || keyId === "") {
      throw new UpstreamError("entra", "malformed", "Graph's answer to add password has no secretText or keyId", { status: res.status });
    }
    return { keyId, secretText };
  }

  /**
   * Application: a new password ending when the old ones do (the delegation's
   * expiry), then every other password removed, so no secret an earlier answer
   * carried still works. Only a governed application tagged with this
   * delegation is touched. Agent ID: undefined, without asking Graph (an agent
   * identity has no password of its own).
   */
  async rotateSecret(ref: AgentIdentityRef): Promise<string | undefined> {
    if (this.blueprintId) return undefined;
    const app = await this.passwordsOf(ref);
    if (!app) throw identityGone(ref);
    const tags = app.tags ?? [];
    const delegationId = ref.delegationId || (tags.find((t) => t.startsWith(DELEGATION_TAG)) ?? "").slice(DELEGATION_TAG.length);
    if (!tags.includes(GOVERNED_TAG) || !delegationId || !tags.includes(`${DELEGATION_TAG}${delegationId}`)) {
      this.log?.warn({ delegationId: ref.delegationId, clientId: app.appId, objectId: app.id }, "Entra application is not this delegation's; not rotating its password");
      throw new UpstreamError("entra", "rejected", `Entra application ${app.appId} is not this delegation's; its passwords were left untouched`, {
        reason: "ENTRA_IDENTITY_CONFLICT",
        metadata: { client_id: app.appId },
      });
    }
    const endDateTime = passwordEnd(app);
    if (!endDateTime) {
      // Without an end, Graph would make the password outlive the delegation (two years by default).
      throw new UpstreamError("entra", "rejected", `Entra application ${app.appId} has neither a password nor a noted expiry to end a new password at`, {
        reason: "ENTRA_REJECTED",
        metadata: { client_id: app.appId },
      });
    }
    if (Date.parse(endDateTime) <= Date.now()) {
      throw new UpstreamError("entra", "rejected", `the password of Entra application ${app.appId} ended at ${endDateTime}: the delegation has expired`, {
        reason: "ENTRA_IDENTITY_EXPIRED",
        metadata: { client_id: app.appId },
      });
    }

    let added: { keyId: string; secretText: string };
    try {
      added = await this.addPassword(app.id, delegationId, endDateTime);
    } catch (err) {
      // Deleted since it was read.
      if (err instanceof UpstreamError && err.status === 404) throw identityGone(ref);
      throw err;
    }
    // From here on a failure must not leave the new password behind: nobody will ever get its secret.
    try {
      for (const c of app.passwordCredentials) if (c.keyId !== added.keyId) await this.removePassword(app.id, c.keyId, ref);
    } catch (err) {
      try {
        await this.removePassword(app.id, added.keyId, ref);
      } catch (cleanupErr) {
        // It ends with the delegation, and the next rotation or the deletion removes it.
        this.log?.warn({ err: cleanupErr, delegationId, objectId: app.id }, "could not remove the password of a failed Entra rotation");
      }
      throw err;
    }
    this.log?.info(
      { delegationId, clientId: app.appId, objectId: app.id, removed: app.passwordCredentials.length },
      "rotated the Entra application's password",
    );
    return added.secretText;
  }

  /**
   * The application a reference names (object id, else appId, else delegation
   * tag) with its password credentials, or undefined when it does not exist.
   * A 404 is asked again for a few seconds: a retried create may come right
   * after the application was made, before reads see it.
   */
  private async passwordsOf(ref: AgentIdentityRef): Promise<ApplicationPasswords | undefined> {
    let path: string;
    if (ref.objectId) path = `/applications/${encodeURIComponent(ref.objectId)}`;
    else if (ref.clientId) path = `/applications(appId=${encodeURIComponent(odataString(ref.clientId))})`;
    else if (ref.delegationId) {
      const ids = await this.find(`tags/any(t:t eq ${odataString(`${DELEGATION_TAG}${ref.delegationId}`)})`);
      if (ids.length > 1) {
        throw new UpstreamError("entra", "rejected", `Entra holds ${ids.length} applications tagged with delegation ${ref.delegationId}; not choosing one`, {
          reason: "ENTRA_IDENTITY_CONFLICT",
          metadata: { delegation_id: ref.delegationId },
        });
      }
      const [id] = ids;
      if (!id) return undefined;
      path = `/applications/${encodeURIComponent(id)}`;
    } else {
      throw invalidArgument("delegation_id", "an identity needs an object id, a client id or a delegation id");
    }
    const url = `${path}?$select=id,appId,tags,notes,passwordCredentials`;
    const res = await this.untilReplicated("read application", () => this.graph({ method: "GET", url }), (r) => r.status === 404);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw graphError("read application", res);
    const app = this.object(res, "read application") as Partial<ApplicationPasswords> & DirectoryObject;
    if (!Array.isArray(app.passwordCredentials)) {
      throw new UpstreamError("entra", "malformed", "Graph's answer to read application has no passwordCredentials", { status: res.status });
    }
    const passwordCredentials = app.passwordCredentials.filter((c) => typeof c?.keyId === "string" && c.keyId !== "");
    return { ...app, passwordCredentials };
  }

  /**
   * Removes one password. Repeating a removal is harmless (the password is gone
   * either way), so HttpClient may repeat it; Graph then refuses the keyId it no
   * longer has (400 or 404, codes undocumented), which a fresh read tells apart
   * from a real refusal.
   */
  private async removePassword(objectId: string, keyId: string, ref: AgentIdentityRef): Promise<void> {
    const path = `/applications/${encodeURIComponent(objectId)}`;
    const res = await this.graph({ method: "POST", url: `${path}/removePassword`, json: { keyId }, idempotent: true });
    if (res.status === 204 || res.status === 200) return;
    if (res.status === 400 || res.status === 404) {
      const now = await this.graph({ method: "GET", url: `${path}?$select=id,passwordCredentials` });
      if (now.status === 404) throw identityGone(ref);
      if (now.status === 200) {
        const listed = this.http.json<{ passwordCredentials?: { keyId?: unknown }[] }>(now).passwordCredentials;
        if (Array.isArray(listed) && !listed.some((c) => c?.keyId === keyId)) return;
      }
    }
    throw graphError("remove password", res);
  }

  async deleteAgent(ref: AgentIdentityRef): Promise<void> {
    const kind = this.blueprintId ? "servicePrincipal" : "application";
    let ids: string[];
    if (ref.objectId) ids = [ref.objectId];
    else if (ref.clientId) ids = await this.find(`appId eq ${odataString(ref.clientId)}`);
    else if (ref.delegationId) ids = await this.find(`tags/any(t:t eq ${odataString(`${DELEGATION_TAG}${ref.delegationId}`)})`);
    else return;
    for (const id of ids) await this.deleteObject(kind, id);
    this.log?.info({ delegationId: ref.delegationId, clientId: ref.clientId, objectIds: ids }, "deleted Entra identity");
  }

  /** Deletes one object (gone already counts as deleted) and, when configured, purges it from deleted items. */
  private async deleteObject(kind: "application" | "servicePrincipal", id: string): Promise<void> {
    const path = kind === "application" ? "/applications/" : "/servicePrincipals/";
    const res = await this.graph({ method: "DELETE", url: `${path}${encodeURIComponent(id)}` });
    if (res.status !== 204 && res.status !== 200 && res.status !== 404) throw graphError(`delete ${kind}`, res);
    if (!this.purgeDeleted) return;
    const purge = await this.graph({ method: "DELETE", url: `/directory/deletedItems/${encodeURIComponent(id)}` });
    if (purge.status !== 204 && purge.status !== 200 && purge.status !== 404) throw graphError("purge deleted item", purge);
  }

  /** Object ids of this driver's kind of identity matching an OData filter. */
  private async find(filter: string): Promise<string[]> {
    const ids: string[] = [];
    for await (const o of this.list(filter)) ids.push(o.id);
    return ids;
  }

  private collectionPath(): string {
    return this.blueprintId ? "/servicePrincipals/microsoft.graph.agentIdentity" : "/applications";
  }

  /** Every object matching `filter`, following @odata.nextLink. */
  private async *list(filter: string): AsyncGenerator<DirectoryObject> {
    let url = `${this.graphUrl}${this.collectionPath()}?$filter=${encodeURIComponent(filter)}&$select=id,appId,tags&$top=${PAGE_SIZE}`;
    for (;;) {
      const res = await this.graph({ method: "GET", url });
      if (res.status !== 200) throw graphError("list identities", res);
      const page = this.http.json<GraphCollection>(res);
      for (const o of page.value ?? []) yield o;
      const next = page["@odata.nextLink"];
      if (!next) return;
      // The bearer token goes only to Graph.
      if (!next.startsWith(`${this.graphUrl}/`)) {
        throw new UpstreamError("entra", "malformed", "Graph's @odata.nextLink points outside the Graph URL", { status: res.status });
      }
      url = next;
    }
  }

  async *listAgents(): AsyncIterable<AgentIdentityRef> {
    for await (const o of this.list(`tags/any(t:t eq ${odataString(GOVERNED_TAG)})`)) {
      const tag = o.tags?.find((t) => t.startsWith(DELEGATION_TAG));
      // governed:true without a delegation id is not provably ours: leave it alone.
      if (!tag) continue;
      yield { delegationId: tag.slice(DELEGATION_TAG.length), clientId: o.appId, objectId: o.id };
    }
  }

  async close(): Promise<void> {
    if (this.ownsHttp) await this.http.close();
  }
}

function parseJson(text: string): unknown {
  if (text === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    return {};
  }
}

function graphBody(res: HttpResponse): GraphErrorBody {
  const body = parseJson(res.text);
  return body && typeof body === "object" ? (body as GraphErrorBody) : {};
}

function graphCode(res: HttpResponse): string {
  return graphBody(res).error?.code ?? "";
}

/** The identity a rotation was asked for no longer exists: nothing to retry. */
function identityGone(ref: AgentIdentityRef): UpstreamError {
  const name = ref.clientId || ref.objectId || ref.delegationId;
  return new UpstreamError("entra", "rejected", `Entra application ${name} no longer exists; the delegation's identity is gone`, {
    reason: "ENTRA_IDENTITY_GONE",
    metadata: { ...(ref.delegationId ? { delegation_id: ref.delegationId } : {}), ...(ref.clientId ? { client_id: ref.clientId } : {}) },
  });
}

/**
 * When a new password must end: when the earliest current one does (each ends
 * with the delegation), else at the expiry registerApplication wrote into the
 * notes ("… Expires: <ISO>.").
 */
function passwordEnd(app: ApplicationPasswords): string | undefined {
  let earliest: string | undefined;
  for (const c of app.passwordCredentials) {
    const at = typeof c.endDateTime === "string" ? Date.parse(c.endDateTime) : NaN;
    if (!Number.isNaN(at) && (earliest === undefined || at < Date.parse(earliest))) earliest = new Date(at).toISOString();
  }
  if (earliest) return earliest;
  const noted = /Expires: (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z)\.$/.exec(app.notes ?? "")?.[1];
  return noted && !Number.isNaN(Date.parse(noted)) ? noted : undefined;
}

/** A Graph answer the driver cannot accept, by status and code. */
function graphError(operation: string, res: HttpResponse): UpstreamError {
  const body = graphBody(res);
  const code = body.error?.code ?? "";
  const metadata: Record<string, string> = { operation };
  if (code) metadata.code = code;
  const requestId = body.error?.innerError?.["request-id"];
  if (requestId) metadata.request_id = requestId;
  const what = `${res.status}${code ? ` ${code}` : ""}`;
  if (res.status === 401) {
    const reason = "ENTRA_CREDENTIALS_REJECTED";
    return new UpstreamError("entra", "credentials", `Graph refused the broker's token to ${operation} (${what})`, { status: res.status, reason, metadata });
  }
  if (res.status === 403) {
    const reason = "ENTRA_PERMISSION_DENIED";
    return new UpstreamError("entra", "credentials", `the broker's Entra application may not ${operation} (${what})`, { status: res.status, reason, metadata });
  }
  const failure = res.status >= 500 || res.status === 429 ? "status" : "rejected";
  return new UpstreamError("entra", failure, `Graph answered ${what} to ${operation}`, { status: res.status, reason: "ENTRA_REJECTED", metadata });
}

/** Maps a failed token acquisition; the messages name codes, never the secret. */
function tokenError(err: unknown, transportFailure: unknown): UpstreamError {
  if (err instanceof UpstreamError) return err;
  // MSAL reports a failed request as network_error / openid_config_error; the cause is ours.
  if (transportFailure instanceof UpstreamError) return transportFailure;
  if (err instanceof ServerError) {
    const metadata: Record<string, string> = {};
    if (err.errorCode) metadata.error = err.errorCode;
    if (err.errorNo) metadata.aadsts = String(err.errorNo); // typed string, a JSON number at run time
    if (err.status !== undefined) metadata.status = String(err.status);
    if (err.status === undefined) {
      // MSAL's throttle cache answered without asking: Entra said to back off (429/5xx, Retry-After).
      return new UpstreamError("entra", "status", "Entra token requests are paused after Entra asked the broker to back off", {
        reason: "ENTRA_THROTTLED",
        metadata,
        cause: err,
      });
    }
    if (err.status === 429 || err.status >= 500) {
      return new UpstreamError("entra", "status", `Entra's token endpoint answered ${err.status}`, { reason: "ENTRA_UNAVAILABLE", metadata, cause: err });
    }
    if (CREDENTIAL_ERRORS.has(err.errorCode) || (err.status >= 400 && err.status < 500)) {
      const aadsts = err.errorNo ? `, AADSTS${err.errorNo}` : "";
      return new UpstreamError("entra", "credentials", `Entra rejected the broker's client credentials (${err.errorCode}${aadsts})`, {
        reason: "ENTRA_CREDENTIALS_REJECTED",
        metadata,
        cause: err,
      });
    }
  }
  const code = err instanceof AuthError ? err.errorCode : "unknown";
  return new UpstreamError("entra", "unreachable", `could not obtain an Entra token (${code})`, {
    reason: "ENTRA_TOKEN_UNAVAILABLE",
    metadata: { error: code },
    cause: err,
  });
}
