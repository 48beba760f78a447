/**
 * The soak's unary load, in its own process (bench/soak.ts forks it): a
 * steady, rate-limited mix of CreateDelegation (short TTLs, so delegations
 * keep expiring), GetDelegation (gRPC, and Connect on the web port),
 * AuthorizeCommand (ALLOW mostly; DENY of a prohibited command; a ceremony,
 * some of them approved and used), RevokeDelegation and ListAgents pages.
 *
 * It keeps the delegations it created (their expire time, budget and the
 * commands it sent), so it can tell an answer a race explains (revoking what
 * just expired, DENY of one whose budget it spent) from one nothing explains,
 * which it counts as unexpected.
 *
 * IPC: see soak-shared.ts (start / report / stop).
 */
import { randomUUID } from "node:crypto";
import { type CallOptions, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { CommandDecision, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { type LoadConfig, Recorder, SOAK_DELEGATORS, errorKey, pick, serveClient, sleep, uniform } from "./soak-shared.js";

const TICK_MS = 20;
const CALL_TIMEOUT_MS = 10_000;
/** A delegation this close to its expire time may end under a call: a refusal then is no surprise. */
const NEAR_END_MS = 2_000;
/** Delegations kept for GetDelegation after they were created (ended ones included). */
const RECENT = 2_000;

const ALLOW_COMMANDS = ["git status --short", "ls -la /srv/app", "npm test", "cat README.md", "kubectl get pods -n staging"];
/** Matches the prohibited entry `rm -rf` every delegation is created with. */
const PROHIBITED_COMMAND = "sudo rm -rf /tmp/soak";
/** Matches the default ceremony entry `drop`. */
const CEREMONY_COMMAND = "psql -c 'DROP TABLE t'";
/** Of the ceremonies asked for, the share a "human" approves and the agent then uses. */
const APPROVE_SHARE = 0.3;
/** Denials that say the delegation has ended (or is ending). */
const ENDED_REASONS = new Set(["delegation_expired", "delegation_revoked", "command_limit", "delegation_failed"]);

interface Tracked {
  id: string;
  did: string;
  expireAt: number;
  budget: number;
  /** ALLOW-path commands sent (each may count one). */
  attempts: number;
  /** When the load revokes it (Infinity: it runs to its TTL or budget). */
  revokeAt: number;
  /** A revoke was sent / answered OK. */
  revokeSent: boolean;
  revoked: boolean;
  /** Index in `live`, or -1 once it left it. */
  slot: number;
}

const recorder = new Recorder();
let config: LoadConfig;
let running = false;
let inFlight = 0;
let skipped = 0;
let created = 0;
let revokedCount = 0;
let ticker: NodeJS.Timeout | undefined;
const live: Tracked[] = [];
const recent: Tracked[] = [];
let recentNext = 0;

type Client = ReturnType<typeof createClient<typeof DelegationService>>;
let grpc: Client;
let web: Client;

const ms = (t: Timestamp | undefined) => (t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0);
const as = (did: string): CallOptions => ({ headers: { "x-delegator-did": did }, timeoutMs: CALL_TIMEOUT_MS });
const asAdmin: CallOptions = { timeoutMs: CALL_TIMEOUT_MS };

function leaveLive(t: Tracked): void {
  if (t.slot < 0) return;
  const last = live.pop()!;
  if (last !== t) {
    live[t.slot] = last;
    last.slot = t.slot;
  }
  t.slot = -1;
}

function nearEnd(t: Tracked, at: number): boolean {
  return t.expireAt - at < NEAR_END_MS || t.revokeSent || t.attempts >= t.budget;
}

/** A live delegation that can take a command now, or undefined. */
function pickLive(forAllow: boolean): Tracked | undefined {
  const now = Date.now();
  for (let i = 0; i < 5 && live.length > 0; i++) {
    const t = live[Math.floor(Math.random() * live.length)]!;
    if (t.expireAt - now < NEAR_END_MS) {
      leaveLive(t);
      continue;
    }
    if (forAllow && t.attempts >= t.budget) continue;
    return t;
  }
  return undefined;
}

/**
 * Runs one call, timing it; `rpc` labels it. The answer's outcome is what
 * `onOk` returns (else OK); errors go to `onError` (or count as unexpected).
 */
async function timed<T>(rpc: string, call: () => Promise<T>, onOk: (r: T) => string | void, onError?: (key: string, err: unknown) => void): Promise<void> {
  inFlight++;
  const t0 = performance.now();
  try {
    const r = await call();
    recorder.latency(rpc, performance.now() - t0);
    recorder.outcome(rpc, onOk(r) ?? "OK");
  } catch (err) {
    const key = errorKey(err);
    // A client-side deadline is a stall, not an answer: its latency would only say "10 s".
    if (!key.startsWith("DEADLINE_EXCEEDED")) recorder.latency(rpc, performance.now() - t0);
    recorder.outcome(rpc, key);
    if (onError) onError(key, err);
    else recorder.bad(rpc, key, String((err as Error)?.message ?? err));
  } finally {
    inFlight--;
  }
}

function create(): Promise<void> {
  const did = pick(SOAK_DELEGATORS);
  const ttlS = Math.round(uniform(config.ttlMinS, config.ttlMaxS));
  // One in ten has a small budget, so some end by exhaustion (command_limit) rather than by time.
  const budget = Math.random() < 0.1 ? 3 + Math.floor(Math.random() * 6) : 500;
  return timed(
    "create",
    () =>
      grpc.createDelegation(
        {
          delegatorAcId: `ac-${did.slice(did.lastIndexOf("/") + 1)}`,
          agentType: "soak",
          agentModel: "soak-model",
          requestId: randomUUID(),
          scope: { ttl: { seconds: BigInt(ttlS), nanos: 0 }, maxCommands: budget, prohibitedCommands: ["rm -rf"] },
        },
        as(did),
      ),
    (r) => {
      const d = r.delegation!;
      created++;
      const expireAt = ms(d.expireTime);
      const t: Tracked = {
        id: d.delegationId,
        did,
        expireAt,
        budget,
        attempts: 0,
        revokeAt: Math.random() < config.revokeShare ? Date.now() + uniform(0.2, 0.8) * ttlS * 1000 : Number.POSITIVE_INFINITY,
        revokeSent: false,
        revoked: false,
        slot: live.length,
      };
      if (d.state !== DelegationState.ACTIVE) recorder.bad("create", `state ${DelegationState[d.state]}`, d.delegationId);
      live.push(t);
      if (recent.length < RECENT) recent.push(t);
      else recent[recentNext] = t;
      recentNext = (recentNext + 1) % RECENT;
    },
  );
}

function revoke(t: Tracked): Promise<void> {
  const sentAt = Date.now();
  const wasNear = nearEnd(t, sentAt);
  t.revokeSent = true;
  leaveLive(t);
  return timed(
    "revoke",
    () => grpc.revokeDelegation({ delegationId: t.id, reason: "soak", requestId: randomUUID() }, as(t.did)),
    () => {
      t.revoked = true;
      revokedCount++;
    },
    (key, err) => {
      // It expired, or its last command spent the budget, while the revoke was on its way.
      if (key === "FAILED_PRECONDITION/DELEGATION_NOT_ACTIVE" && (wasNear || t.expireAt - Date.now() < NEAR_END_MS || t.attempts >= t.budget)) {
        recorder.fine("revoke", key);
      } else recorder.bad("revoke", key, `${t.id}: ${(err as Error).message}`);
    },
  );
}

function authorize(): Promise<void> | undefined {
  const roll = Math.random();
  const kind = roll < 0.85 ? "allow" : roll < 0.95 ? "deny" : "ceremony";
  const t = pickLive(kind === "allow");
  if (!t) return undefined;
  const command = kind === "allow" ? pick(ALLOW_COMMANDS) : kind === "deny" ? PROHIBITED_COMMAND : CEREMONY_COMMAND;
  const sentAt = Date.now();
  // Before this command: an ALLOW-path command is only sent while the budget has room, so it cannot be refused for the budget.
  const endingAtSend = nearEnd(t, sentAt);
  if (kind === "allow" && ++t.attempts >= t.budget) leaveLive(t);
  const wanted = kind === "allow" ? "ALLOW" : kind === "deny" ? "DENY/prohibited_command" : "CEREMONY_REQUIRED";
  return timed(
    "authorize",
    () => grpc.authorizeCommand({ delegationId: t.id, command }, as(t.did)),
    (r) => {
      const what = decisionOf(r);
      if (kind === "deny" ? what === wanted : CommandDecision[r.decision] === wanted) {
        if (kind === "ceremony" && Math.random() < APPROVE_SHARE) void approveAndUse(t, command, r.ceremonyId);
        return what;
      }
      // A refusal because it ended is expected only when it was ending anyway (its TTL, a revoke the load sent, or for
      // a ceremony its spent budget).
      const now = Date.now();
      const ending =
        t.expireAt - now < NEAR_END_MS || t.revokeSent || (kind === "allow" ? t.expireAt - sentAt < NEAR_END_MS : endingAtSend || t.attempts >= t.budget);
      if (r.decision === CommandDecision.DENY && ENDED_REASONS.has(r.reason) && ending) return what;
      recorder.bad("authorize", `${kind} -> ${what}`, `${t.id} (attempts ${t.attempts}/${t.budget}, expires ${t.expireAt - sentAt} ms after the send)`);
      return what;
    },
    (key, err) => recorder.bad("authorize", key, `${t.id}: ${(err as Error).message}`),
  );
}

/** DENY/prohibited_command, ALLOW, ALLOW/allowed_last_command (the one that spent the budget), CEREMONY_REQUIRED. */
function decisionOf(r: { decision: CommandDecision; reason: string }): string {
  const decision = CommandDecision[r.decision] ?? String(r.decision);
  return r.reason && r.reason !== "allowed" && r.reason !== "ceremony_required" ? `${decision}/${r.reason}` : decision;
}

/** A human approves the ceremony, then the agent runs the command with it (ALLOW once, counted). */
async function approveAndUse(t: Tracked, command: string, ceremonyId: string): Promise<void> {
  if (!running) return;
  let approved = false;
  await timed(
    "approve",
    () => grpc.approveCeremony({ ceremonyId, reason: "soak: ok" }, as(t.did)),
    () => {
      approved = true;
    },
    (key, err) => {
      if (key === "FAILED_PRECONDITION/CEREMONY_NOT_PENDING" && nearEnd(t, Date.now())) recorder.fine("approve", key);
      else recorder.bad("approve", key, `${ceremonyId}: ${(err as Error).message}`);
    },
  );
  if (!approved || !running || t.attempts >= t.budget || t.revokeSent) return;
  if (++t.attempts >= t.budget) leaveLive(t);
  const sentAt = Date.now();
  await timed(
    "authorize-ceremony",
    () => grpc.authorizeCommand({ delegationId: t.id, command, ceremonyId }, as(t.did)),
    (r) => {
      const what = decisionOf(r);
      if (r.decision === CommandDecision.ALLOW) return what;
      if (r.decision === CommandDecision.DENY && (t.expireAt - Date.now() < NEAR_END_MS || t.expireAt - sentAt < NEAR_END_MS || t.revokeSent)) return what;
      recorder.bad("authorize-ceremony", what, `${t.id} ${ceremonyId}`);
      return what;
    },
    (key, err) => recorder.bad("authorize-ceremony", key, `${t.id}: ${(err as Error).message}`),
  );
}

function get(viaConnect: boolean): Promise<void> | undefined {
  if (recent.length === 0) return undefined;
  const t = recent[Math.floor(Math.random() * recent.length)]!;
  const sentAt = Date.now();
  const activeAtSend = !nearEnd(t, sentAt);
  const revokedBefore = t.revoked;
  const rpc = viaConnect ? "get-connect" : "get";
  return timed(
    rpc,
    () => (viaConnect ? web : grpc).getDelegation({ delegationId: t.id }, as(t.did)),
    (r) => {
      const d = r.delegation!;
      if (activeAtSend && !nearEnd(t, Date.now()) && d.state !== DelegationState.ACTIVE) {
        recorder.bad(rpc, `state ${DelegationState[d.state]} (${d.endReason})`, `${t.id} expected ACTIVE, expires in ${t.expireAt - sentAt} ms`);
      }
      if (revokedBefore && d.state === DelegationState.ACTIVE) recorder.bad(rpc, "ACTIVE after a revoke", t.id);
      // Commands are counted only for what was sent: never more than the sends made before the answer.
      if (d.commandsExecuted > t.attempts) {
        recorder.bad(rpc, "commands_executed above commands sent", `${t.id}: ${d.commandsExecuted} > ${t.attempts}`);
      }
    },
  );
}

/** GetDelegation of an id nobody issued: NOT_FOUND, on purpose. */
function getUnknown(): Promise<void> {
  const id = `del_${Array.from({ length: 26 }, () => "0123456789ABCDEFGHJKMNPQRSTVWXYZ"[Math.floor(Math.random() * 32)]).join("")}`;
  return timed(
    "get-unknown",
    () => grpc.getDelegation({ delegationId: id }, as(pick(SOAK_DELEGATORS))),
    () => recorder.bad("get-unknown", "OK for an id never issued", id),
    (key) => (key === "NOT_FOUND/DELEGATION_NOT_FOUND" ? recorder.fine("get-unknown", key) : recorder.bad("get-unknown", key, id)),
  );
}

interface Listing {
  options: CallOptions;
  delegatorDid: string;
  state: DelegationState;
  pageSize: number;
  token: string;
  /** Only the first page (listings of ended delegations, which only grow). */
  firstPageOnly: boolean;
}
const idleListings: Listing[] = [];

function newListing(ended: boolean): Listing {
  if (ended) {
    const did = pick(SOAK_DELEGATORS);
    const state = Math.random() < 0.5 ? DelegationState.EXPIRED : DelegationState.REVOKED;
    return { options: as(did), delegatorDid: did, state, pageSize: 50, token: "", firstPageOnly: true };
  }
  if (Math.random() < 0.2) return { options: asAdmin, delegatorDid: "", state: DelegationState.ACTIVE, pageSize: 100, token: "", firstPageOnly: false };
  const did = pick(SOAK_DELEGATORS);
  return { options: as(did), delegatorDid: did, state: DelegationState.ACTIVE, pageSize: 50, token: "", firstPageOnly: false };
}

/** One page of a listing: continues an idle listing that has more pages, or starts one. */
function listPage(ended: boolean): Promise<void> {
  const l = (!ended && idleListings.pop()) || newListing(ended);
  const rpc = ended ? "list-ended" : "list";
  return timed(
    rpc,
    () => grpc.listAgents({ pageSize: l.pageSize, pageToken: l.token, delegatorDid: l.delegatorDid, state: l.state }, l.options),
    (r) => {
      if (r.delegations.length > l.pageSize) recorder.bad(rpc, "page larger than page_size");
      if (!l.firstPageOnly && r.nextPageToken !== "" && idleListings.length < 8) {
        l.token = r.nextPageToken;
        idleListings.push(l);
      }
    },
  );
}

interface Kind {
  name: string;
  perS: number;
  due: number;
  fire: () => Promise<void> | undefined;
}

function kinds(): Kind[] {
  const rest = Math.max(0, config.rate - config.createsPerS * (1 + config.revokeShare));
  const k = (name: string, perS: number, fire: () => Promise<void> | undefined): Kind => ({ name, perS, due: 0, fire });
  return [
    k("create", config.createsPerS, create),
    k("authorize", rest * 0.56, authorize),
    k("get", rest * 0.28, () => get(false)),
    k("get-connect", rest * 0.04, () => get(true)),
    k("get-unknown", rest * 0.01, getUnknown),
    k("list", rest * 0.1, () => listPage(false)),
    k("list-ended", rest * 0.01, () => listPage(true)),
  ];
}

function begin(c: LoadConfig): Promise<void> {
  config = c;
  grpc = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${c.grpcPort}` }));
  web = createClient(DelegationService, createConnectTransport({ baseUrl: `http://127.0.0.1:${c.webPort}`, httpVersion: "1.1" }));
  running = true;
  const ks = kinds();
  let last = performance.now();
  ticker = setInterval(() => {
    const now = performance.now();
    const dt = Math.min(0.5, (now - last) / 1000);
    last = now;
    const wall = Date.now();
    // Scheduled revokes, and delegations too close to their end to be picked any more.
    for (let i = live.length - 1; i >= 0; i--) {
      const t = live[i]!;
      if (t.revokeAt <= wall) {
        if (inFlight < config.maxInFlight) void revoke(t);
        else {
          skipped++;
          leaveLive(t);
        }
      } else if (t.expireAt - wall < NEAR_END_MS) leaveLive(t);
    }
    for (const k of ks) {
      k.due += k.perS * dt;
      while (k.due >= 1) {
        k.due -= 1;
        if (inFlight >= config.maxInFlight) {
          skipped++;
          continue;
        }
        void k.fire();
      }
    }
  }, TICK_MS);
  return Promise.resolve();
}

async function end(): Promise<void> {
  running = false;
  clearInterval(ticker);
  const until = Date.now() + CALL_TIMEOUT_MS + 1000;
  while (inFlight > 0 && Date.now() < until) await sleep(20);
}

serveClient<LoadConfig>(
  recorder,
  begin,
  () => {
    const g = { inFlight, skipped, live: live.length, created, revoked: revokedCount };
    skipped = 0;
    return g;
  },
  end,
);
