/**
 * Keeps the model current: follows WatchDelegations (resuming from the last
 * revision after a disconnect, with backoff), lists ACTIVE delegations and
 * PENDING ceremonies at the first checkpoint after every (re)start from "now",
 * and hands each event to the model and the feed.
 */
import { type BrokerClient, type Ceremony, type Delegation, type DelegationEvent, DelegationState, followDelegations } from "../../src/client/web.js";
import type { DashboardModel } from "./model.js";

export interface LiveCallbacks {
  /** The model changed: render it. */
  changed(): void;
  /** An event arrived (for the feed). */
  event(ev: DelegationEvent, revision: bigint): void;
  /** "live", "connecting", "reconnecting" in `retryInMs`, or "stopped" after a failure a retry cannot fix. */
  status(state: "live" | "connecting" | "reconnecting" | "stopped", retryInMs?: number): void;
  /** A failure the user should see (listing failed, or the watch cannot go on). */
  failed(doing: string, err: unknown): void;
}

/** Most rows listed; a delegator with more sees the oldest ones. */
const MAX_LISTED = 5000;
const PAGE = 500;

export class LiveSync {
  private abort: AbortController | undefined;

  constructor(
    private readonly client: BrokerClient,
    private readonly model: DashboardModel,
    private readonly on: LiveCallbacks,
  ) {}

  /** Starts (or restarts, re-listing everything) following the broker. */
  start(): void {
    this.stop();
    const abort = new AbortController();
    this.abort = abort;
    void this.run(abort.signal);
  }

  stop(): void {
    this.abort?.abort();
    this.abort = undefined;
  }

  private async run(signal: AbortSignal): Promise<void> {
    let needList = true;
    this.on.status("connecting");
    try {
      for await (const item of followDelegations(this.client, { signal })) {
        switch (item.kind) {
          case "reset":
            needList = true;
            this.on.status("connecting");
            break;
          case "checkpoint":
            // The stream is not read while listing, so the events after this checkpoint wait and apply on top.
            if (needList) needList = !(await this.relist(signal));
            if (signal.aborted) return;
            this.on.status("live");
            break;
          case "event":
            this.model.apply(item.event);
            this.on.changed();
            this.on.event(item.event, item.revision);
            break;
          case "disconnected":
            this.on.status("reconnecting", item.retryInMs);
            break;
        }
      }
    } catch (err) {
      if (!signal.aborted) {
        this.on.status("stopped");
        this.on.failed("Watching delegations", err);
      }
    }
  }

  /** Lists everything afresh; false (and the error shown) when it failed: the next checkpoint tries again. */
  private async relist(signal: AbortSignal): Promise<boolean> {
    try {
      const [delegations, ceremonies] = await Promise.all([this.listDelegations(signal), this.listCeremonies(signal)]);
      if (signal.aborted) return false;
      this.model.load(delegations, ceremonies);
      this.on.changed();
      return true;
    } catch (err) {
      if (!signal.aborted) this.on.failed("Listing delegations", err);
      return false;
    }
  }

  private async listDelegations(signal: AbortSignal): Promise<Delegation[]> {
    const all: Delegation[] = [];
    let pageToken = "";
    do {
      const page = await this.client.listAgents({ state: DelegationState.ACTIVE, pageSize: PAGE, pageToken }, { signal });
      all.push(...page.delegations);
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && all.length < MAX_LISTED);
    return all;
  }

  private async listCeremonies(signal: AbortSignal): Promise<Ceremony[]> {
    const all: Ceremony[] = [];
    let pageToken = "";
    do {
      const page = await this.client.listCeremonies({ pageSize: PAGE, pageToken }, { signal });
      all.push(...page.ceremonies);
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && all.length < MAX_LISTED);
    return all;
  }
}
