/**
 * The soak's watchers, in their own process (bench/soak.ts forks it): N
 * WatchDelegations streams that each live a random 5-20 s, are cancelled by
 * the client and reconnect at once, so the broker keeps registering and
 * releasing subscribers all run long. Each new stream picks a filter (a
 * delegator's own delegations, everything as the admin, one delegation it
 * saw created), half of them resume from the revision their slot saw last
 * (a replay from the log), and one in five opens its own HTTP/2 connection
 * and closes it afterwards (connection churn, not only stream churn).
 *
 * Measured: the time to a stream's first message (its checkpoint), the lag
 * of live events (receipt - event_time), and revisions going backwards or
 * repeating on a stream (which would be a gap-and-duplicate bug).
 *
 * IPC: see soak-shared.ts (start / report / stop).
 */
import { setMaxListeners } from "node:events";
import { type CallOptions, Code, ConnectError, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { DelegationEventType } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { Recorder, SOAK_DELEGATORS, type WatchConfig, errorKey, pick, serveClient, sleep, uniform } from "./soak-shared.js";

const FRESH_CONNECTION_SHARE = 0.2;
const RESUME_SHARE = 0.5;
/** Delegation ids seen in CREATED events, for watchers of one delegation. */
const SEEN = 200;

const recorder = new Recorder();
let running = false;
let open = 0;
let opened = 0;
let events = 0;
let checkpoints = 0;
let openedTotal = 0;
let eventsTotal = 0;
const seen: { id: string; did: string }[] = [];
let seenNext = 0;
const slots: Promise<void>[] = [];
const stopping = new AbortController();
// Every slot listens for the stop: more than the default 10 listeners is the design, not a leak.
setMaxListeners(0, stopping.signal);

type Client = ReturnType<typeof createClient<typeof DelegationService>>;

interface Session {
  kind: string;
  request: { startRevision: bigint; delegatorDid: string; delegationId: string };
  options: CallOptions;
}

function session(lastRevision: bigint): Session {
  const startRevision = lastRevision > 0n && Math.random() < RESUME_SHARE ? lastRevision : 0n;
  const roll = Math.random();
  if (roll < 0.2) return { kind: "admin-all", request: { startRevision, delegatorDid: "", delegationId: "" }, options: {} };
  if (roll < 0.4 && seen.length > 0) {
    const s = pick(seen);
    return { kind: "one-delegation", request: { startRevision, delegatorDid: "", delegationId: s.id }, options: { headers: { "x-delegator-did": s.did } } };
  }
  const did = pick(SOAK_DELEGATORS);
  // Half name the delegator as the filter, half rely on "own delegations" alone.
  const delegatorDid = Math.random() < 0.5 ? did : "";
  return { kind: "delegator", request: { startRevision, delegatorDid, delegationId: "" }, options: { headers: { "x-delegator-did": did } } };
}

async function slot(shared: Client, baseUrl: string, cfg: WatchConfig): Promise<void> {
  let lastRevision = 0n;
  // Spread the first connections, so the streams do not all end together.
  await sleep(uniform(0, 2000));
  while (running) {
    const s = session(lastRevision);
    const lifeMs = uniform(cfg.lifeMinS, cfg.lifeMaxS) * 1000;
    const cancel = new AbortController();
    const onStop = () => cancel.abort();
    stopping.signal.addEventListener("abort", onStop, { once: true });
    const timer = setTimeout(() => cancel.abort(), lifeMs);
    const manager = Math.random() < FRESH_CONNECTION_SHARE ? new Http2SessionManager(baseUrl) : undefined;
    const client = manager ? createClient(DelegationService, createGrpcTransport({ baseUrl, sessionManager: manager })) : shared;
    const t0 = performance.now();
    let first = true;
    let prev = s.request.startRevision;
    let replaying = s.request.startRevision > 0n;
    open++;
    opened++;
    try {
      for await (const m of client.watchDelegations(s.request, { ...s.options, signal: cancel.signal })) {
        if (first) {
          first = false;
          recorder.latency("watch-open", performance.now() - t0);
        }
        if (m.kind.case === "event") {
          events++;
          if (m.revision <= prev) recorder.bad("watch", "revision not increasing", `${s.kind}: ${m.revision} after ${prev}`);
          prev = m.revision;
          const e = m.kind.value;
          if (!replaying && e.eventTime) {
            recorder.latency("watch-lag", Date.now() - (Number(e.eventTime.seconds) * 1000 + Math.floor(e.eventTime.nanos / 1e6)));
          }
          if (e.type === DelegationEventType.CREATED && e.delegation) {
            const entry = { id: e.delegation.delegationId, did: e.delegation.delegatorDid };
            if (seen.length < SEEN) seen.push(entry);
            else seen[seenNext] = entry;
            seenNext = (seenNext + 1) % SEEN;
          }
        } else if (m.kind.case === "checkpoint") {
          checkpoints++;
          if (m.revision < prev) recorder.bad("watch", "checkpoint behind the stream", `${s.kind}: ${m.revision} after ${prev}`);
          if (m.revision > prev) prev = m.revision;
          replaying = false;
        }
        lastRevision = prev;
      }
      if (!cancel.signal.aborted) recorder.bad("watch", "ended by the server", s.kind);
      recorder.outcome("watch", "closed");
    } catch (err) {
      const e = ConnectError.from(err);
      if (cancel.signal.aborted && e.code === Code.Canceled) {
        recorder.outcome("watch", "cancelled by the client");
      } else {
        const key = errorKey(err);
        recorder.outcome("watch", key);
        recorder.bad("watch", key, `${s.kind}: ${e.message}`);
      }
    } finally {
      clearTimeout(timer);
      stopping.signal.removeEventListener("abort", onStop);
      open--;
      manager?.abort();
    }
    if (running) await sleep(uniform(0, 300));
  }
}

function begin(cfg: WatchConfig): Promise<void> {
  running = true;
  const baseUrl = `http://127.0.0.1:${cfg.grpcPort}`;
  const shared = createClient(DelegationService, createGrpcTransport({ baseUrl }));
  for (let i = 0; i < cfg.watchers; i++) slots.push(slot(shared, baseUrl, cfg));
  return Promise.resolve();
}

async function end(): Promise<void> {
  running = false;
  stopping.abort();
  await Promise.race([Promise.all(slots), sleep(10_000)]);
}

serveClient<WatchConfig>(
  recorder,
  begin,
  () => {
    openedTotal += opened;
    eventsTotal += events;
    const g = { open, opened, events, checkpoints, openedTotal, eventsTotal };
    opened = 0;
    events = 0;
    checkpoints = 0;
    return g;
  },
  end,
);
