/**
 * The GSAP driver (GSAP_DRIVER=http): the prototype's two calls to the GSAP
 * governance broker, over the shared HTTP policy.
 *
 * - The delegator's context: GET {url}/governance/authorize/{context_id}/.
 * - The agent's context: POST {url}/governance/authorize/ with the prototype's
 *   on_behalf_of body, plus what GSAP needs to narrow it (delegator_ac_id,
 *   capability_ceiling, ttl_seconds).
 * - Its revocation when the delegation ends: POST {url}{revokePath} with
 *   {"reason", "delegation_id"}; the path template (GSAP_REVOKE_PATH, by
 *   default /governance/authorize/{context_id}/revoke/) is the broker's
 *   assumption about GSAP's API, which the prototype never called. 2xx and
 *   404 mean done; 5xx, 429 and timeouts are retried by the caller; another
 *   4xx is a refusal for good.
 *
 * Every answer is validated before the broker relies on it (see
 * `parseDelegatorContext` and `parseDelegatedContext` for the contract); an
 * answer that breaks it is an UpstreamError "malformed" (UNAVAILABLE), never
 * stored. The bearer token is sent in the Authorization header only: it is
 * never part of an error, a log line or an echoed GSAP message.
 */
import type { DelegatedContext } from "../../domain/index.js";
import { BrokerError, UpstreamError } from "../../domain/index.js";
import { HttpClient, type HttpResponse } from "../http/http-client.js";
import type { Logger } from "../../logging.js";
import { ApprovalPending, type DelegatedContextRequest, type DelegatorContext, type GsapClient } from "./gsap-client.js";

export interface HttpGsapOptions {
  /** GSAP's base URL (GSAP_BROKER_URL); a trailing slash is ignored. */
  url: string;
  /** The broker's bearer token for GSAP (GSAP_BEARER_TOKEN). */
  bearerToken: string;
  /** The corpus entry the delegated sessions run against (GSAP_CORPUS_ENTRY_CID). */
  corpusEntryCid: string;
  /** Capability names from weakest to strongest (CAPABILITY_ORDER). */
  capabilityOrder: string[];
  /** By default, an HttpClient of its own named "gsap". The driver owns it: close() closes it. */
  http?: HttpClient;
  /**
   * Where a delegated context is revoked, relative to `url`; `{context_id}` is
   * replaced by the (URL-encoded) context id. By default, DEFAULT_REVOKE_PATH.
   */
  revokePath?: string;
  /** By default, nothing is logged. */
  log?: Logger;
}

/** The broker's assumption about GSAP's revocation endpoint (GSAP_REVOKE_PATH). */
export const DEFAULT_REVOKE_PATH = "/governance/authorize/{context_id}/revoke/";

/**
 * The statuses of a delegator context that may be delegated from. GSAP calls a
 * granted context "authorized" (the prototype's POST answer) and a running
 * session's context "active"; anything else (pending, denied, revoked,
 * expired, …) is not active. Compared exactly, as GSAP spells them.
 */
export const ACTIVE_CONTEXT_STATUSES: ReadonlySet<string> = new Set(["authorized", "active"]);

/**
 * GSAP's name for the driver that authorizes the session. The prototype always
 * sent "keycloak", whichever identity provider registered the agent; it names
 * GSAP's driver, not the broker's AGENT_REGISTRAR, so it is kept as sent.
 */
export const GSAP_DRIVER_ID = "keycloak";

/** A poll token as the broker accepts it (it becomes a path segment). */
const POLL_TOKEN = /^[A-Za-z0-9._~:@+=-]{1,256}$/;

/** The longest piece of a GSAP error text passed on to the caller. */
const MAX_DETAIL = 200;

/** Creates the HTTP GSAP driver. */
export function createHttpGsap(options: HttpGsapOptions): GsapClient {
  const base = options.url.replace(/\/+$/, "");
  const token = options.bearerToken;
  const order = options.capabilityOrder;
  const http = options.http ?? new HttpClient({ system: "gsap" });
  const log = options.log;
  const auth = { authorization: `Bearer ${token}` };
  const revokePath = options.revokePath ?? DEFAULT_REVOKE_PATH;

  const credentialsRejected = (status: number) => {
    log?.error({ system: "gsap", status }, "GSAP rejected the broker's bearer token");
    return new UpstreamError("gsap", "credentials", `GSAP broker rejected the broker's credentials (${status})`, {
      status,
      reason: "GSAP_CREDENTIALS_REJECTED",
    });
  };

  // A rejected POST answer may name a context GSAP did issue: the error carries its id
  // (metadata context_id), so the failed creation revokes it.
  const malformed = (res: HttpResponse, what: string, contextId?: string) => {
    log?.warn({ system: "gsap", status: res.status, problem: what, ...(contextId ? { contextId } : {}) }, "GSAP answer rejected");
    return new UpstreamError("gsap", "malformed", `gsap answered ${res.status} with ${what}`, {
      status: res.status,
      ...(contextId ? { metadata: { context_id: contextId } } : {}),
    });
  };

  const jsonObject = (res: HttpResponse): Record<string, unknown> => {
    let value: unknown;
    try {
      value = http.json<unknown>(res);
    } catch (err) {
      log?.warn({ system: "gsap", status: res.status, problem: "not JSON" }, "GSAP answer rejected");
      throw err;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw malformed(res, "JSON that is not an object");
    return value as Record<string, unknown>;
  };

  const denied = (status: number, detail: string) =>
    new BrokerError(
      "FAILED_PRECONDITION",
      "GSAP_DENIED",
      `GSAP broker denied the delegated access context (${status})${detail ? `: ${errorDetail(detail, token)}` : ""}`,
      { metadata: { system: "gsap", status: String(status) } },
    );

  /** A 2xx answer to the POST or a poll: the context, or a pending approval (thrown). */
  const issuedOrPending = (res: HttpResponse, req: DelegatedContextRequest): DelegatedContext => {
    const answer = jsonObject(res);
    if (answer.status === "pending") {
      const token = answer.poll_token;
      if (typeof token !== "string" || !POLL_TOKEN.test(token)) throw malformed(res, "a pending status without a usable poll_token");
      log?.info({ system: "gsap", delegationId: req.delegationId }, "GSAP's approval of the delegated context is pending");
      throw new ApprovalPending(token);
    }
    const issued = typeof answer.context_id === "string" ? answer.context_id : undefined;
    const ctx = parseDelegatedContext(answer, req, order, (what) => malformed(res, what, issued));
    log?.info({ system: "gsap", delegationId: req.delegationId, contextId: ctx.contextId }, "delegated access context issued");
    return ctx;
  };

  return {
    mode: "http",

    async describeDelegatorContext(contextId: string, delegatorDid: string): Promise<DelegatorContext> {
      // "." and ".." (also percent-encoded) are resolved away by URL parsing: they would ask about another path.
      if (contextId === "" || /^(\.|%2e){1,2}$/i.test(contextId)) throw notActive();
      const res = await http.send({
        method: "GET",
        url: `${base}/governance/authorize/${encodeURIComponent(contextId)}/`,
        headers: auth,
      });
      if (res.status === 401 || res.status === 403) throw credentialsRejected(res.status);
      // GSAP does not tell a context it never issued from one it forgot: both are not active.
      if (res.status === 400 || res.status === 404 || res.status === 410) throw notActive();
      if (res.status < 200 || res.status > 299) throw unexpectedStatus(res);
      return parseDelegatorContext(jsonObject(res), contextId, delegatorDid, order, (what) => malformed(res, what));
    },

    async requestDelegatedContext(req: DelegatedContextRequest): Promise<DelegatedContext> {
      const body = {
        driver_id: GSAP_DRIVER_ID,
        principal: req.agentDid,
        playbook: `delegation:${req.delegationId}`,
        corpus_entry_cid: options.corpusEntryCid,
        parameters_cid: `sha256:delegation-${req.delegationId}`,
        accord_template: req.accordTemplate,
        session_mode: "delegation",
        on_behalf_of: req.agentDid,
        delegator_ac_id: req.delegatorAcId,
        capability_ceiling: req.capabilityCeiling,
        // Rounded down: the agent's context must not outlive the delegation.
        ttl_seconds: Math.max(1, Math.floor(req.ttlMs / 1000)),
      };
      // Not idempotent: HttpClient repeats it only when GSAP provably did not process it.
      const res = await http.send({ method: "POST", url: `${base}/governance/authorize/`, headers: auth, json: body });
      if (res.status === 401) throw credentialsRejected(res.status);
      if (res.status === 408) throw unexpectedStatus(res);
      if (res.status >= 400 && res.status <= 499) {
        const detail = errorDetail(res.text, token);
        log?.info({ system: "gsap", status: res.status, delegationId: req.delegationId, detail }, "GSAP denied the delegated context");
        throw denied(res.status, detail);
      }
      if (res.status < 200 || res.status > 299) throw unexpectedStatus(res);
      return issuedOrPending(res, req);
    },

    async pollApproval(pollToken: string, req: DelegatedContextRequest): Promise<DelegatedContext> {
      if (!POLL_TOKEN.test(pollToken)) throw new UpstreamError("gsap", "malformed", "refusing to poll a malformed poll_token", { reason: "GSAP_REJECTED" });
      const res = await http.send({ method: "GET", url: `${base}/governance/authorize/${encodeURIComponent(pollToken)}/`, headers: auth });
      if (res.status === 401 || res.status === 403) throw credentialsRejected(res.status);
      // A flow GSAP no longer knows cannot be approved any more.
      if (res.status === 404 || res.status === 410) throw denied(res.status, "");
      if (res.status < 200 || res.status > 299) throw unexpectedStatus(res);
      const answer = jsonObject(res);
      if (answer.status === "denied" || answer.status === "rejected" || answer.status === "revoked" || answer.status === "expired") {
        throw denied(res.status, typeof answer.detail === "string" ? answer.detail : String(answer.status));
      }
      return issuedOrPending(res, req);
    },

    async revokeContext(contextId: string, reason: string, revokeOptions: { delegationId?: string } = {}): Promise<void> {
      if (contextId === "" || /^(\.|%2e){1,2}$/i.test(contextId)) {
        throw new UpstreamError("gsap", "rejected", "refusing to revoke an empty or relative context id", { reason: "GSAP_REJECTED" });
      }
      const path = revokePath.replace("{context_id}", encodeURIComponent(contextId));
      // Revoking twice is harmless, so timeouts and 5xx are repeated here and by the caller's backoff.
      const res = await http.send({
        method: "POST",
        url: `${base}${path}`,
        headers: auth,
        json: { reason, delegation_id: revokeOptions.delegationId ?? "" },
        idempotent: true,
      });
      if ((res.status >= 200 && res.status <= 299) || res.status === 404) {
        log?.info({ system: "gsap", contextId, reason, status: res.status }, res.status === 404 ? "GSAP no longer knows the delegated context" : "delegated context revoked");
        return;
      }
      if (res.status === 401 || res.status === 403) throw credentialsRejected(res.status);
      if (res.status === 408) throw unexpectedStatus(res);
      const detail = errorDetail(res.text, token);
      throw new UpstreamError("gsap", "rejected", `GSAP refused to revoke context ${contextId} (${res.status})${detail ? `: ${detail}` : ""}`, {
        status: res.status,
        reason: "GSAP_REVOKE_REJECTED",
      });
    },

    async close() {
      await http.close();
    },
  };
}

/**
 * The GET contract. A 2xx answer must be a JSON object with:
 * - context_id: string, equal to the one asked about;
 * - status: string; active when in ACTIVE_CONTEXT_STATUSES;
 * - principal_did, or when it is absent principal: a non-empty string;
 * - capability_ceiling: string;
 * - expires_at / expire_time: optional, null or an ISO 8601 date-time (no offset = UTC).
 * Then, in this order so a stranger learns nothing about someone else's context:
 * a principal other than the delegator, or a status that is not active, is
 * DELEGATOR_CONTEXT_NOT_ACTIVE; a ceiling outside the capability order is
 * DELEGATOR_CEILING_UNKNOWN.
 */
export function parseDelegatorContext(
  answer: Record<string, unknown>,
  contextId: string,
  delegatorDid: string,
  capabilityOrder: readonly string[],
  malformed: (what: string) => Error,
): DelegatorContext {
  if (typeof answer.context_id !== "string" || answer.context_id === "") throw malformed("no context_id");
  if (answer.context_id !== contextId) throw malformed("a context_id other than the one asked about");
  if (typeof answer.status !== "string") throw malformed("no status");
  const ownerField = present(answer.principal_did) ? "principal_did" : "principal";
  const owner = answer[ownerField];
  if (!present(owner)) throw malformed("no principal_did");
  if (typeof owner !== "string" || owner === "") throw malformed(`a ${ownerField} that is not a non-empty string`);
  if (typeof answer.capability_ceiling !== "string") throw malformed("no capability_ceiling");
  const expireTime = expiry(answer, malformed);

  if (owner !== delegatorDid) throw notActive();
  if (!ACTIVE_CONTEXT_STATUSES.has(answer.status)) throw notActive();
  if (!capabilityOrder.includes(answer.capability_ceiling)) {
    throw new BrokerError(
      "FAILED_PRECONDITION",
      "DELEGATOR_CEILING_UNKNOWN",
      `the delegator's capability ceiling "${answer.capability_ceiling.slice(0, 64)}" is not in the broker's CAPABILITY_ORDER`,
    );
  }
  return { contextId, capabilityCeiling: answer.capability_ceiling, expireTime };
}

/**
 * The POST contract. A 2xx answer is accepted only when it is a JSON object with:
 * - status: exactly "authorized";
 * - context_id: non-empty string;
 * - capability_ceiling: absent, or a capability of CAPABILITY_ORDER not above the requested one;
 * - delegation_id: absent, or ours;
 * - delegator_ac_id: absent, or the delegator context we named;
 * - principal_did and on_behalf_of: each absent, or the agent's DID;
 * - expires_at / expire_time: absent, or an ISO 8601 date-time (no offset = UTC).
 * Absent means missing or null. The whole answer is kept as the context's attributes.
 */
export function parseDelegatedContext(
  answer: Record<string, unknown>,
  req: DelegatedContextRequest,
  capabilityOrder: readonly string[],
  malformed: (what: string) => Error,
): DelegatedContext {
  if (answer.status !== "authorized") throw malformed(`status ${shown(answer.status)}, not "authorized"`);
  if (typeof answer.context_id !== "string" || answer.context_id === "") throw malformed("no context_id");
  let ceiling = req.capabilityCeiling;
  if (present(answer.capability_ceiling)) {
    const granted = answer.capability_ceiling;
    const at = typeof granted === "string" ? capabilityOrder.indexOf(granted) : -1;
    if (at < 0) throw malformed("a capability_ceiling outside CAPABILITY_ORDER");
    if (at > capabilityOrder.indexOf(req.capabilityCeiling)) {
      throw malformed(`capability_ceiling ${granted as string} above the requested ${req.capabilityCeiling}`);
    }
    ceiling = granted as string;
  }
  if (present(answer.delegation_id) && answer.delegation_id !== req.delegationId) {
    throw malformed("a delegation_id other than the one requested");
  }
  if (present(answer.delegator_ac_id) && answer.delegator_ac_id !== req.delegatorAcId) {
    throw malformed("a delegator_ac_id other than the one requested");
  }
  for (const field of ["principal_did", "on_behalf_of"]) {
    if (present(answer[field]) && answer[field] !== req.agentDid) throw malformed(`a ${field} other than the agent`);
  }
  const expireTime = expiry(answer, malformed);
  return {
    contextId: answer.context_id,
    status: "authorized",
    principalDid: req.agentDid,
    delegationId: req.delegationId,
    capabilityCeiling: ceiling,
    expireTime,
    attributes: answer,
  };
}

function notActive(): BrokerError {
  // The same words as the manager's answer for a context the caller may not use.
  return new BrokerError("FAILED_PRECONDITION", "DELEGATOR_CONTEXT_NOT_ACTIVE", "the delegator's access context is not active");
}

function unexpectedStatus(res: HttpResponse): UpstreamError {
  return new UpstreamError("gsap", "status", `gsap answered ${res.status}`, { status: res.status });
}

/** Whether an optional field is given: FastAPI writes an absent optional field as null. */
function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$/i;

/** An ISO 8601 / RFC 3339 date-time as epoch ms, or NaN. No offset means UTC. */
export function parseIsoTime(value: string): number {
  const m = ISO_DATE_TIME.exec(value.trim());
  if (!m) return Number.NaN;
  const [, y, mo, d, h, mi, sec, zone] = m;
  const month = Number(mo);
  const day = Number(d);
  // Date.parse rolls 2026-02-30 over to March; a real date names a real day.
  const daysInMonth = new Date(Date.UTC(Number(y), month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth) return Number.NaN;
  if (Number(h) > 23 || Number(mi) > 59 || Number(sec ?? 0) > 59) return Number.NaN;
  const s = value.trim().replace(" ", "T");
  return Date.parse(zone === undefined ? `${s}Z` : s);
}

/**
 * expires_at / expire_time as epoch ms, or null when both are absent. A time
 * without an offset is UTC (the prototype wrote naive UTC times). When both are
 * given, the earlier one holds.
 */
function expiry(answer: Record<string, unknown>, malformed: (what: string) => Error): number | null {
  let at: number | null = null;
  for (const f of ["expires_at", "expire_time"]) {
    const v = answer[f];
    if (!present(v)) continue;
    const ms = typeof v === "string" ? parseIsoTime(v) : Number.NaN;
    if (Number.isNaN(ms)) throw malformed(`an unparseable ${f}`);
    at = at === null ? ms : Math.min(at, ms);
  }
  return at;
}

function shown(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(v.slice(0, 32)) : typeof v;
}

/**
 * GSAP's reason for a 4xx, safe to pass on: FastAPI's `detail` (or `error`,
 * `message`) when the body is JSON, the text otherwise; the bearer token and
 * anything that looks like a bearer credential removed, control characters
 * dropped, truncated.
 */
export function errorDetail(text: string, token: string): string {
  let detail = text;
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed !== null && typeof parsed === "object") {
      const o = parsed as Record<string, unknown>;
      const pick = [o.detail, o.error, o.message].find((v) => v !== undefined);
      if (pick !== undefined) detail = typeof pick === "string" ? pick : JSON.stringify(pick);
    }
  } catch {
    // not JSON: the text itself
  }
  if (token !== "") detail = detail.split(token).join("[redacted]");
  detail = detail
    .replace(/\b(bearer|basic)\s+[^\s"',;]+/gi, "$1 [redacted]")
    .replace(/[\u0000-\u001f\u007f]+/g, " ")
    .trim();
  return detail.length > MAX_DETAIL ? `${detail.slice(0, MAX_DETAIL)}…` : detail;
}
