/**
 * `watch`: follows WatchDelegations and prints each event as it arrives.
 * Every message carries the revision it brings the client up to; when the
 * stream breaks (the broker restarts, the connection drops, the broker cuts
 * off a slow consumer), the verb reconnects with exponential backoff and
 * jitter and resumes after the last revision it saw, so nothing is missed
 * and nothing is printed twice. A first connection that fails is an error
 * (exit 1), as for every verb. SIGINT or SIGTERM stops it with exit 0.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Command } from "commander";
import { ErrorDetailSchema, WatchDelegationsResponseSchema } from "../../gen/llmbroker/v1/delegation_pb.js";
import { EXIT } from "../exit-codes.js";
import { reportFailure, runVerb } from "./call.js";
import type { Connection } from "./connection.js";
import type { Done } from "./delegations.js";
import { describeFailure, isTlsFailure } from "./errors.js";
import { type ClientFlags, clientOptions, nonEmpty, parseRevision } from "./options.js";
import type { Output } from "./output.js";
import { eventLine, json } from "./render.js";

interface WatchFlags extends ClientFlags {
  since?: bigint;
  delegation?: string;
  delegator?: string;
}

/** Backoff between reconnects. By default, 250 ms doubling to 10 s. */
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 10_000;

/** Adds watch to `program`. */
export function addWatchVerb(program: Command, done: Done): void {
  clientOptions(
    program
      .command("watch")
      .description("print lifecycle and ceremony events as they happen; reconnects and resumes; Ctrl-C stops")
      .option("--since <revision>", "replay every event after this revision first (default: 0, from now)", parseRevision)
      .option("--delegation <delegation_id>", "only this delegation's events", nonEmpty)
      .option("--delegator <did>", "only events of this delegator's delegations", nonEmpty)
      .addHelpText("after", "\nwith --json, one JSON object per line: {\"revision\": \"…\", \"event\": {…}}"),
  ).action(async (flags: WatchFlags) => done(await runVerb(flags, (conn, out) => follow(conn, out, flags), { watch: true })));
}

/**
 * Whether a broken stream is worth resuming: the connection or the broker
 * went away, or it cut off a slow consumer. Only once a stream has worked:
 * a first attempt that fails (a wrong --addr, a broker that is not up, a
 * plaintext call to a TLS port) is reported at once, like any other verb.
 */
function resumable(err: unknown): boolean {
  const ce = ConnectError.from(err);
  const detail = ce.findDetails(ErrorDetailSchema)[0];
  if (isTlsFailure(err)) return false;
  if (ce.code === Code.Unavailable) return true;
  if (ce.code === Code.ResourceExhausted) return detail?.reason === "WATCH_SLOW_CONSUMER";
  // Not the broker's answer (it always attaches a detail) but the transport's: a reset stream, a dropped connection.
  return detail === undefined && (ce.code === Code.Internal || ce.code === Code.Unknown || ce.code === Code.Canceled);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

async function follow(conn: Connection, out: Output, f: WatchFlags): Promise<number> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let revision = f.since ?? 0n;
  let delay = BACKOFF_MIN_MS;
  let connectedOnce = false;
  try {
    while (!stop.signal.aborted) {
      let announced = false;
      const from = revision;
      let why: string;
      try {
        const stream = conn.client.watchDelegations(
          { startRevision: revision, delegationId: f.delegation ?? "", delegatorDid: f.delegator ?? "" },
          { signal: stop.signal },
        );
        for await (const m of stream) {
          if (!announced) {
            // The first message (a replayed event, or the checkpoint once caught up) says the stream works.
            announced = true;
            delay = BACKOFF_MIN_MS;
            const at = from === 0n ? m.revision : from;
            out.note(connectedOnce ? `watch: resumed after revision ${at}` : `watching ${conn.target} from revision ${at} (Ctrl-C to stop)`);
            connectedOnce = true;
          }
          if (m.revision > revision) revision = m.revision;
          if (m.kind.case !== "event") continue;
          if (out.json) out.out(JSON.stringify(json(WatchDelegationsResponseSchema, m)));
          else {
            const line = eventLine(m, out);
            if (line) out.out(line);
          }
        }
        why = "the stream ended";
      } catch (err) {
        if (stop.signal.aborted) break;
        if (!connectedOnce || !resumable(err)) return reportFailure(err, conn.target, out);
        const ce = ConnectError.from(err);
        why = ce.code === Code.Canceled ? `the connection was lost (${ce.rawMessage})` : describeFailure(err, conn.target).line;
      }
      if (stop.signal.aborted) break;
      // Equal jitter: between half and all of the delay, so watchers cut off together do not return together.
      const wait = Math.round(delay / 2 + (Math.random() * delay) / 2);
      out.note(`watch: ${why}; reconnecting in ${(wait / 1000).toFixed(1)}s, from revision ${revision}`);
      await sleep(wait, stop.signal);
      delay = Math.min(delay * 2, BACKOFF_MAX_MS);
    }
    return EXIT.ok;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
