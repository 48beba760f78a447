/**
 * A fake GSAP governance broker on a real loopback HTTP server (127.0.0.1,
 * port 0), speaking the two calls the broker makes:
 *
 * - GET  /governance/authorize/{context_id}/ answers a context a test set up
 *   (or one the fake issued), 404 otherwise;
 * - POST /governance/authorize/ issues `ac-<n>` on behalf of the agent, if the
 *   delegator's context is active and holds the requested ceiling (403 otherwise);
 * - POST /governance/authorize/{context_id}/revoke/ (the broker's assumed
 *   revocation endpoint) marks a context revoked: 200 with the context, or 404
 *   for one it does not know. Each revocation is recorded with its body.
 *
 * All require `Authorization: Bearer <token>` (401 otherwise). Tests inject
 * faults for the next answers (a status, 429 with Retry-After, a delay,
 * a malformed body), take the server down (connections refused) and up again,
 * and read every request the fake saw.
 */
import { type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { LoopbackFake } from "./loopback.js";

export interface FakeGsapContext {
  contextId: string;
  /** authorized, active, revoked, expired, … */
  status: string;
  principalDid: string;
  capabilityCeiling: string;
  /** ISO time, or null for none. By default, none. */
  expiresAt?: string | null;
  /** Fields added to (or replacing) the GET answer, e.g. `{ principal_did: undefined, principal: "…" }`. */
  extra?: Record<string, unknown>;
}

/** Ways the next answer is broken. */
export type MalformedAnswer =
  | "not-json"
  | "array"
  | "empty-body"
  | "missing-context-id"
  | "empty-context-id"
  | "denied"
  | "missing-status"
  | "ceiling-above"
  | "unknown-ceiling"
  | "wrong-delegation-id"
  | "wrong-delegator"
  | "wrong-principal"
  | "wrong-on-behalf-of"
  | "bad-expiry"
  | "impossible-date"
  | "other-context-id";

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  text: string;
  /** The parsed JSON body, or undefined. */
  body: unknown;
}

type Fault =
  | { kind: "status"; status: number; body: string; headers: Record<string, string> }
  | { kind: "delay"; ms: number }
  | { kind: "malformed"; which: MalformedAnswer };

export interface GsapFakeOptions {
  bearerToken: string;
  /** Capability names from weakest to strongest. By default, CAP_READ, CAP_MUTATE, CAP_ADMIN. */
  capabilityOrder?: string[];
}

const AUTHORIZE = "/governance/authorize/";

export class GsapFake extends LoopbackFake {
  /** Every request that reached the server, in arrival order. */
  readonly requests: RecordedRequest[] = [];
  /** Contexts by id: those a test set, and those the fake issued. */
  readonly contexts = new Map<string, FakeGsapContext>();
  /** The answers of POSTs that issued a context, by context id. */
  readonly issued = new Map<string, Record<string, unknown>>();
  /** Fields merged into every POST answer (undefined removes one), e.g. a narrower ceiling. */
  answerOverrides: Record<string, unknown> = {};
  /** Revocations that succeeded, in order: context id, reason and delegation id sent, Date.now() on arrival. */
  readonly revocations: { contextId: string; reason: unknown; delegationId: unknown; at: number }[] = [];
  /** When each request the caller gave up on (its connection closed before the answer) was dropped, in ms since the epoch. */
  readonly abandoned: number[] = [];

  private readonly faults: Fault[] = [];
  /** When set, queued faults apply only to requests with this method (others pass untouched). */
  faultMethod: "GET" | "POST" | undefined;
  /** When set, queued faults apply only to requests whose path ends with this (e.g. "/revoke/"). */
  faultPathSuffix: string | undefined;
  private readonly order: string[];
  /** Cancels the delays in progress (close() ends them). */
  private next = 1;

  private constructor(
    server: Server,
    private readonly token: string,
    order: string[] | undefined,
  ) {
    super(server);
    this.order = order ?? ["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"];
  }

  /** Starts a fake on an ephemeral loopback port. */
  static async start(options: GsapFakeOptions): Promise<GsapFake> {
    let fake!: GsapFake;
    const server = createServer((req, res) => void fake.handle(req, res));
    fake = new GsapFake(server, options.bearerToken, options.capabilityOrder);
    await fake.up();
    return fake;
  }

  /** The base URL (GSAP_BROKER_URL). */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The requests with this method. */
  requestsOf(method: "GET" | "POST"): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method);
  }

  setContext(ctx: FakeGsapContext): void {
    this.contexts.set(ctx.contextId, ctx);
  }

  /** The next `n` answers are `status` with `body` (JSON-encoded unless a string). */
  failNext(n: number, status: number, body: unknown = { detail: `fake answered ${status}` }, headers: Record<string, string> = {}): void {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    for (let i = 0; i < n; i++) this.faults.push({ kind: "status", status, body: text, headers });
  }

  /** The next `n` answers are 429 with this Retry-After. */
  rateLimitNext(n: number, retryAfter: string): void {
    this.failNext(n, 429, { detail: "slow down" }, { "retry-after": retryAfter });
  }

  /** The next `n` requests are answered normally after `ms` (the work is done even if the caller gave up). */
  delayNext(n: number, ms: number): void {
    for (let i = 0; i < n; i++) this.faults.push({ kind: "delay", ms });
  }

  /** Drops the faults still queued. */
  clearFaults(): void {
    this.faults.length = 0;
  }

  /** The next `n` answers are broken in this way (the POST still issues its context). */
  malformNext(which: MalformedAnswer, n = 1): void {
    for (let i = 0; i < n; i++) this.faults.push({ kind: "malformed", which });
  }


  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let body: unknown;
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    const path = req.url ?? "/";
    this.requests.push({ method: req.method ?? "", path, headers: req.headers, text, body });
    res.once("close", () => {
      if (!res.writableFinished) this.abandoned.push(Date.now());
    });

    const targeted =
      (this.faultMethod === undefined || req.method === this.faultMethod) && (this.faultPathSuffix === undefined || path.endsWith(this.faultPathSuffix));
    let fault = targeted ? this.faults.shift() : undefined;
    if (fault?.kind === "delay") {
      await this.sleep(fault.ms);
      if (!this.listening) return;
      fault = undefined;
    }
    if (fault?.kind === "status") {
      res.writeHead(fault.status, { "content-type": "application/json", ...fault.headers });
      res.end(fault.body);
      return;
    }
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      return send(res, 401, { detail: "Invalid or missing bearer token" });
    }

    let answer: { status: number; body: Record<string, unknown> };
    const revoke = /^\/governance\/authorize\/([^/]+)\/revoke\/$/.exec(path);
    if (req.method === "POST" && path === AUTHORIZE) answer = this.authorize(body);
    else if (req.method === "POST" && revoke) answer = this.revoke(decodeURIComponent(revoke[1]!), body);
    else if (req.method === "GET" && path.startsWith(AUTHORIZE) && path.endsWith("/") && path.length > AUTHORIZE.length + 1) {
      answer = this.lookup(decodeURIComponent(path.slice(AUTHORIZE.length, -1)));
    } else answer = { status: 404, body: { detail: "Not Found" } };

    if (fault?.kind === "malformed" && answer.status < 300) {
      const broken = this.malform(fault.which, answer.body);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(broken);
      return;
    }
    send(res, answer.status, answer.body);
  }

  /**
   * GSAP's approval flow: while set, a delegated-context request is answered
   * {"status": "pending", "poll_token"} and its context is issued only once
   * decideApproval says so; GET /governance/authorize/{poll_token}/ answers
   * pending, denied, or the authorized context.
   */
  approvalFlow = false;
  readonly approvals = new Map<string, { state: "pending" | "authorized" | "denied"; answer: Record<string, unknown>; context: FakeGsapContext }>();

  /** Decides a pending approval (by its poll token). */
  decideApproval(pollToken: string, decision: "authorized" | "denied"): void {
    const a = this.approvals.get(pollToken);
    if (!a || a.state !== "pending") throw new Error(`no pending approval ${pollToken}`);
    a.state = decision;
    if (decision === "authorized") {
      this.issued.set(a.context.contextId, a.answer);
      this.contexts.set(a.context.contextId, a.context);
    }
  }

  /** Poll tokens of the approvals not decided yet, oldest first. */
  pendingApprovals(): string[] {
    return [...this.approvals].filter(([, a]) => a.state === "pending").map(([t]) => t);
  }

  private lookup(id: string): { status: number; body: Record<string, unknown> } {
    const approval = this.approvals.get(id);
    if (approval) {
      if (approval.state === "authorized") return { status: 200, body: approval.answer };
      return { status: 200, body: { status: approval.state, poll_token: id, ...(approval.state === "denied" ? { detail: "the approver said no" } : {}) } };
    }
    const ctx = this.contexts.get(id);
    if (!ctx) return { status: 404, body: { detail: "Access context not found" } };
    return {
      status: 200,
      body: withFields(
        {
          context_id: ctx.contextId,
          status: ctx.status,
          principal_did: ctx.principalDid,
          capability_ceiling: ctx.capabilityCeiling,
          ...(ctx.expiresAt !== undefined ? { expires_at: ctx.expiresAt } : {}),
        },
        ctx.extra ?? {},
      ),
    };
  }

  private revoke(id: string, body: unknown): { status: number; body: Record<string, unknown> } {
    const ctx = this.contexts.get(id);
    if (!ctx) return { status: 404, body: { detail: "Access context not found" } };
    ctx.status = "revoked";
    const b = (body ?? {}) as Record<string, unknown>;
    this.revocations.push({ contextId: id, reason: b.reason, delegationId: b.delegation_id, at: Date.now() });
    return { status: 200, body: { context_id: id, status: "revoked" } };
  }

  /** Whether the fake has revoked this context. */
  isRevoked(contextId: string): boolean {
    return this.contexts.get(contextId)?.status === "revoked";
  }

  private authorize(body: unknown): { status: number; body: Record<string, unknown> } {
    const b = (body ?? {}) as Record<string, unknown>;
    const required = ["principal", "playbook", "corpus_entry_cid", "on_behalf_of", "delegator_ac_id", "capability_ceiling"];
    const missing = required.filter((f) => typeof b[f] !== "string" || b[f] === "");
    if (body === null || typeof body !== "object" || missing.length > 0) {
      return { status: 422, body: { detail: missing.map((f) => ({ loc: ["body", f], msg: "field required" })) } };
    }
    const delegator = this.contexts.get(b.delegator_ac_id as string);
    if (!delegator || (delegator.status !== "authorized" && delegator.status !== "active")) {
      return { status: 403, body: { detail: "delegator access context is not active" } };
    }
    const held = this.order.indexOf(delegator.capabilityCeiling);
    const asked = this.order.indexOf(b.capability_ceiling as string);
    if (asked < 0 || asked > held) {
      return { status: 403, body: { detail: `policy denial: ${String(b.capability_ceiling)} exceeds the delegator's ceiling` } };
    }
    const contextId = `ac-${this.next++}`;
    const agent = b.on_behalf_of as string;
    const ttl = typeof b.ttl_seconds === "number" ? b.ttl_seconds : 3600;
    const expiresAt = new Date(Date.now() + ttl * 1000).toISOString();
    const answer = withFields(
      {
        status: "authorized",
        context_id: contextId,
        principal_did: agent,
        on_behalf_of: agent,
        delegation_id: String(b.playbook).replace(/^delegation:/, ""),
        delegator_ac_id: delegator.contextId,
        capability_ceiling: b.capability_ceiling,
        expires_at: expiresAt,
        delegation_chain: [{ context_id: delegator.contextId, principal_did: delegator.principalDid }],
      },
      this.answerOverrides,
    );
    const context = { contextId, status: "authorized", principalDid: agent, capabilityCeiling: String(answer.capability_ceiling ?? b.capability_ceiling), expiresAt };
    if (this.approvalFlow) {
      const pollToken = `poll-${this.next++}`;
      this.approvals.set(pollToken, { state: "pending", answer, context });
      return { status: 202, body: { status: "pending", poll_token: pollToken } };
    }
    this.issued.set(contextId, answer);
    this.contexts.set(contextId, context);
    return { status: 200, body: answer };
  }

  private malform(which: MalformedAnswer, answer: Record<string, unknown>): string {
    const above = (c: unknown) => this.order[this.order.indexOf(String(c)) + 1] ?? "CAP_ROOT";
    switch (which) {
      case "not-json":
        return "<html><body>502 Bad Gateway</body></html>";
      case "array":
        return JSON.stringify([answer]);
      case "empty-body":
        return "";
      case "missing-context-id":
        return JSON.stringify(withFields(answer, { context_id: undefined }));
      case "empty-context-id":
        return JSON.stringify({ ...answer, context_id: "" });
      case "other-context-id":
        return JSON.stringify({ ...answer, context_id: "ac-someone-else" });
      case "denied":
        return JSON.stringify({ ...answer, status: "denied" });
      case "missing-status":
        return JSON.stringify(withFields(answer, { status: undefined }));
      case "ceiling-above":
        return JSON.stringify({ ...answer, capability_ceiling: above(answer.capability_ceiling) });
      case "unknown-ceiling":
        return JSON.stringify({ ...answer, capability_ceiling: "CAP_GOD" });
      case "wrong-delegation-id":
        return JSON.stringify({ ...answer, delegation_id: "del_SOMEONEELSE" });
      case "wrong-delegator":
        return JSON.stringify({ ...answer, delegator_ac_id: "ac-someone-else" });
      case "wrong-principal":
        return JSON.stringify({ ...answer, principal_did: "did:web:example.com/agent/impostor" });
      case "wrong-on-behalf-of":
        return JSON.stringify({ ...answer, on_behalf_of: "did:web:example.com/agent/impostor" });
      case "bad-expiry":
        return JSON.stringify({ ...answer, expires_at: "next tuesday" });
      case "impossible-date":
        return JSON.stringify({ ...answer, expires_at: "2026-02-30T00:00:00Z" });
    }
  }
}

/** `base` with `fields` applied; an undefined value removes the field. */
function withFields(base: Record<string, unknown>, fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}
