/**
 * The notifier port: "the event log has grown". Notifications are hints with
 * a tiny payload (a revision); the log stays the source of truth, and its
 * readers also poll, so a lost notification delays an event but never loses it.
 *
 * - In-process (SQLite, or one replica): this process's own commits.
 * - PostgreSQL (pg-notifier.ts): every replica's commits, by LISTEN/NOTIFY.
 */

export type RevisionListener = (revision: bigint) => void;

export interface RevisionNotifier {
  readonly kind: "in-process" | "postgresql";
  /** Calls `listener` whenever events up to `revision` may be readable. */
  subscribe(listener: RevisionListener): () => void;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** Something that reports its own commits (the store). */
export interface CommitSource {
  onCommit(listener: (revision: bigint) => void): () => void;
}

/** A set of listeners that one failing listener cannot break. */
export class Listeners {
  private readonly set = new Set<RevisionListener>();

  add(listener: RevisionListener): () => void {
    this.set.add(listener);
    return () => this.set.delete(listener);
  }

  emit(revision: bigint): void {
    for (const l of this.set) {
      try {
        l(revision);
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  clear(): void {
    this.set.clear();
  }
}

/** The notifier of one process: its own store's commits. */
export class InProcessNotifier implements RevisionNotifier {
  readonly kind = "in-process" as const;
  private readonly listeners = new Listeners();
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly source: CommitSource) {}

  subscribe(listener: RevisionListener): () => void {
    return this.listeners.add(listener);
  }

  async start(): Promise<void> {
    this.unsubscribe ??= this.source.onCommit((r) => this.listeners.emit(r));
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.listeners.clear();
  }
}
