/**
 * The notifier across replicas on one PostgreSQL: every transaction that
 * appends events NOTIFYs a channel with its head revision (written in the
 * transaction, so it is delivered on commit and only then, in commit order);
 * each replica LISTENs on one dedicated connection. This process's own
 * commits are announced at once, without the round trip.
 *
 * If the connection drops, it reconnects with backoff and announces the head
 * as unknown (revision 0) once it is back, so readers look at the log for
 * whatever was missed in between.
 */
import pg from "pg";
import type { Logger } from "../logging.js";
import { type CommitSource, Listeners, type RevisionListener, type RevisionNotifier } from "./notifier.js";

/** The channel the broker's store NOTIFYs and its replicas LISTEN on. */
export const NOTIFY_CHANNEL = "llm_broker_events";

export interface PgNotifierOptions {
  url: string;
  /** This process's store, for its own commits. */
  source?: CommitSource;
  /** By default, NOTIFY_CHANNEL. */
  channel?: string;
  log?: Logger;
  /** Longest wait between reconnection attempts. By default, 5 s. */
  maxBackoffMs?: number;
}

export class PgNotifier implements RevisionNotifier {
  readonly kind = "postgresql" as const;
  private readonly listeners = new Listeners();
  private readonly channel: string;
  private client: pg.Client | undefined;
  private closed = false;
  private failures = 0;
  private retry: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly options: PgNotifierOptions) {
    this.channel = options.channel ?? NOTIFY_CHANNEL;
    if (!/^[a-z_][a-z0-9_]*$/.test(this.channel)) throw new Error(`invalid NOTIFY channel name ${this.channel}`);
  }

  subscribe(listener: RevisionListener): () => void {
    return this.listeners.add(listener);
  }

  /** Connects and listens; resolves once LISTEN is in place (the first attempt must succeed). */
  async start(): Promise<void> {
    this.unsubscribe ??= this.options.source?.onCommit((r) => this.listeners.emit(r));
    await this.connect();
  }

  /** Whether the LISTEN connection is up. */
  get connected(): boolean {
    return this.client !== undefined;
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.options.url });
    client.on("notification", (n) => {
      if (n.channel !== this.channel) return;
      let revision = 0n;
      try {
        revision = BigInt(n.payload ?? "0");
      } catch {
        // Not ours to interpret: still a hint that the log may have grown.
      }
      this.listeners.emit(revision);
    });
    client.on("error", (err) => this.lost(client, err));
    client.on("end", () => this.lost(client, new Error("connection ended")));
    try {
      await client.connect();
      await client.query(`LISTEN ${this.channel}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    if (this.failures > 0) {
      this.options.log?.info({ channel: this.channel }, "listening for other replicas' events again");
      this.failures = 0;
      this.listeners.emit(0n); // whatever was committed while we were not listening
    }
  }

  private lost(client: pg.Client, err: unknown): void {
    if (this.client !== client) return; // not the live connection (or already handled)
    this.client = undefined;
    client.end().catch(() => undefined);
    this.reconnectLater(err);
  }

  private reconnectLater(err: unknown): void {
    if (this.closed) return;
    this.failures++;
    const delay = Math.min(this.options.maxBackoffMs ?? 5000, 100 * 2 ** Math.min(this.failures, 10));
    this.options.log?.warn(
      { err, channel: this.channel, retryInMs: delay },
      "lost the LISTEN connection; other replicas' events arrive by polling until it is back",
    );
    this.retry = setTimeout(() => {
      this.connect().catch((e: unknown) => this.reconnectLater(e));
    }, delay);
    this.retry.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    this.unsubscribe?.();
    this.listeners.clear();
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
