/**
 * Finds the Keycloak clients the prototype registered. keycloak.py created
 * one confidential client per delegation, clientId
 * `agent-<agent_type>-<delegation_id>`, with the attributes `agent_type`,
 * `delegator_did` and `delegation_id`, and without this broker's
 * `llm_broker_governed` attribute, so the registrar's listing (an attribute
 * search for it) cannot see them. This looks a client up by its exact
 * clientId (or, when the prototype recorded none, by its `delegation_id`
 * attribute) through the Admin REST API, read-only, with the broker's own
 * service-account token (realm-management `view-clients` or
 * `manage-clients`).
 *
 * Only the migration needs it; an `AgentRegistrar.findAgent(ref)` would make
 * it unnecessary (see the migration guide).
 */
import { HttpClient, type HttpClientOptions, type HttpResponse } from "../clients/http/http-client.js";
import { UpstreamError } from "../domain/index.js";
import type { AgentIdentityRef } from "../registrars/registrar.js";
import type { IdentityLookup, IdentityQuery } from "./identity-lookup.js";

export interface KeycloakClientLookupOptions {
  /** Base URL of Keycloak (no /admin, no /realms). */
  url: string;
  realm: string;
  adminClientId: string;
  adminClientSecret: string;
  /** By default, a new HttpClient for system "keycloak" (built from `httpOptions`), closed by close(). */
  http?: HttpClient;
  httpOptions?: Omit<HttpClientOptions, "system">;
}

interface ClientRepresentation {
  id?: unknown;
  clientId?: unknown;
  attributes?: Record<string, unknown>;
}

const SYSTEM = "keycloak";

/** Creates the lookup. */
export function createKeycloakClientLookup(options: KeycloakClientLookupOptions): IdentityLookup & { close(): Promise<void> } {
  const http = options.http ?? new HttpClient({ ...options.httpOptions, system: SYSTEM });
  const base = options.url.replace(/\/+$/, "");
  const realm = encodeURIComponent(options.realm);
  let token: Promise<string> | undefined;

  const requestToken = async (): Promise<string> => {
    const res = await http.send({
      method: "POST",
      url: `${base}/realms/${realm}/protocol/openid-connect/token`,
      form: { grant_type: "client_credentials", client_id: options.adminClientId, client_secret: options.adminClientSecret },
      idempotent: true,
    });
    const body = res.status === 200 ? http.json<{ access_token?: unknown }>(res) : undefined;
    if (typeof body?.access_token !== "string" || body.access_token === "") {
      // Never the secret, nor Keycloak's words (which could echo it): the status and the client.
      throw new UpstreamError(SYSTEM, res.status === 401 || res.status === 400 ? "credentials" : "status", `keycloak answered ${res.status} to the admin token request of client ${options.adminClientId} (realm ${options.realm})`, {
        status: res.status,
        reason: "KEYCLOAK_CREDENTIALS_REJECTED",
      });
    }
    return body.access_token;
  };

  /** GET on the clients collection; a 401 (the token died) renews the token once. */
  const listClients = async (query: string, what: string): Promise<ClientRepresentation[]> => {
    const send = async () => {
      token ??= requestToken().catch((err: unknown) => {
        token = undefined;
        throw err;
      });
      return http.send({ method: "GET", url: `${base}/admin/realms/${realm}/clients?${query}`, headers: { authorization: `Bearer ${await token}` } });
    };
    let res: HttpResponse = await send();
    if (res.status === 401) {
      token = undefined;
      res = await send();
    }
    if (res.status !== 200) {
      const hint = res.status === 403 ? " (the broker's service account needs the realm-management role view-clients or manage-clients)" : "";
      throw new UpstreamError(SYSTEM, res.status === 401 || res.status === 403 ? "credentials" : res.status >= 500 ? "status" : "rejected", `keycloak answered ${res.status} to ${what}${hint}`, {
        status: res.status,
        reason: "KEYCLOAK_REJECTED",
      });
    }
    const body = http.json<unknown>(res);
    if (!Array.isArray(body)) throw new UpstreamError(SYSTEM, "malformed", `keycloak answered ${what} with something other than a list`, { status: res.status });
    return body.filter((c): c is ClientRepresentation => typeof c === "object" && c !== null);
  };

  return {
    name: SYSTEM,
    async find(q: IdentityQuery): Promise<AgentIdentityRef | undefined> {
      const clients = q.clientId
        ? (await listClients(`clientId=${encodeURIComponent(q.clientId)}`, `looking up client ${q.clientId}`)).filter((c) => c.clientId === q.clientId)
        : await listClients(`q=${encodeURIComponent(`delegation_id:${q.delegationId}`)}&first=0&max=10`, `searching clients of delegation ${q.delegationId}`);
      // A client by that name tagged with another delegation is not this one's identity.
      const own = clients.find((c) => typeof c.id === "string" && c.id !== "" && c.attributes?.delegation_id === q.delegationId);
      if (!own) return undefined;
      return { delegationId: q.delegationId, clientId: typeof own.clientId === "string" ? own.clientId : q.clientId, objectId: own.id as string };
    },
    async close() {
      if (!options.http) await http.close();
    },
  };
}
