/**
 * WAL checkpoints for SQLite, off the event loop. better-sqlite3 runs on the
 * main thread, and SQLite's automatic checkpoint runs inside whichever COMMIT
 * crosses its threshold, copying the WAL into the database file and syncing
 * it: measured here, that tripled the worst commit of a 500-row transaction
 * (7 ms → 22 ms) and nearly doubled the total. The store's connection turns
 * automatic checkpoints off; this worker thread, with a connection of its
 * own, checkpoints every `intervalMs` (PASSIVE: it never blocks the writer),
 * and once more, truncating the WAL, when the store closes.
 *
 * Under writes that never pause, PASSIVE alone lets the WAL grow without
 * bound: SQLite starts writing it from the beginning again only when a
 * checkpoint has copied every frame, and new frames keep arriving (measured:
 * 744 MB of WAL for a 31 MB database after 12 s of creates). So when the WAL
 * holds more than `restartFrames` after a PASSIVE checkpoint, `onRestartDue`
 * is told, and between two commits the store asks this thread to restart
 * the WAL (`restart()`) and holds its writes until it is done. On its own
 * this thread would wait for the write lock, which back-to-back commits
 * never leave free long enough; with the writes held it gets it at once. It
 * runs a TRUNCATE checkpoint: it copies what PASSIVE has not yet, and the
 * next commit writes an empty WAL from its start. The copy is little under
 * steady writes, but writes that outrun PASSIVE (pruning 1,000,000 events)
 * left 150–350 ms of copying and syncing, which is why it runs here and not
 * on the event loop; with RESTART instead, the first commit after it cut the
 * file back to journal_size_limit on the event loop (40–80 ms).
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

// The worker's code, as CommonJS evaluated in the thread (no module resolution of its own).
const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.path);
db.pragma("busy_timeout = 5000");
const checkpoint = (mode) => {
  try {
    const [r] = db.pragma("wal_checkpoint(" + mode + ")");
    parentPort.postMessage({ type: "checkpointed", mode, busy: r.busy, log: r.log, checkpointed: r.checkpointed });
    return r;
  } catch (err) {
    parentPort.postMessage({ type: "error", message: String(err && err.message || err) });
  }
};
const timer = setInterval(() => {
  const r = checkpoint("PASSIVE");
  if (r && r.log > workerData.restartFrames) parentPort.postMessage({ type: "restart-due", log: r.log });
}, workerData.intervalMs);
parentPort.on("message", (m) => {
  if (m.type === "restart") {
    // The store holds its writes while this runs: never wait long for another process's reader.
    db.pragma("busy_timeout = " + m.busyTimeoutMs);
    const r = checkpoint("TRUNCATE");
    db.pragma("busy_timeout = 5000");
    parentPort.postMessage({ type: "restarted", id: m.id, busy: r ? r.busy : 1 });
  }
  if (m.type === "close") {
    clearInterval(timer);
    checkpoint("TRUNCATE");
    db.close();
    parentPort.postMessage({ type: "closed" });
  }
});
`;

export interface CheckpointerOptions {
  /** By default, 1000 ms. */
  intervalMs?: number;
  /** WAL frames (pages) above which a checkpoint restarts the WAL. By default, 16,384 (64 MiB of 4 KiB pages). */
  restartFrames?: number;
  /** Told when the WAL should be restarted (see above). */
  onRestartDue?: () => void;
  /** Told of each checkpoint (tests). */
  onCheckpoint?: (c: { mode: string; busy: number; log: number; checkpointed: number }) => void;
  /** Told of a checkpoint that failed (it is tried again at the next interval). */
  onError?: (message: string) => void;
}

export class SqliteCheckpointer {
  private readonly worker: Worker;
  private closed = false;
  private nextId = 0;
  private readonly restarts = new Map<number, (restarted: boolean) => void>();

  constructor(path: string, options: CheckpointerOptions = {}) {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3");
    this.worker = new Worker(WORKER, { eval: true, workerData: { path, driver, intervalMs: options.intervalMs ?? 1000, restartFrames: options.restartFrames ?? 16_384 },
    });
    this.worker.on("message", (m: { type: string; message?: string; mode?: string; busy?: number; log?: number; checkpointed?: number }) => {
      if (m.type === "error") options.onError?.(m.message ?? "checkpoint failed");
      if (m.type === "restart-due") options.onRestartDue?.();
      if (m.type === "restarted") this.settle((m as { id?: number }).id ?? -1, m.busy === 0);
      if (m.type === "checkpointed") options.onCheckpoint?.({ mode: m.mode ?? "", busy: m.busy ?? 0, log: m.log ?? 0, checkpointed: m.checkpointed ?? 0 });
    });
    this.worker.on("error", (err) => options.onError?.(err.message));
    // The thread must not keep the process alive on its own.
    this.worker.unref();
  }

  /**
   * A TRUNCATE checkpoint on this thread: it copies what PASSIVE has not yet
   * and empties the WAL, so the next commit writes it from its start. The caller must
   * hold its writes until this settles (the checkpoint takes the write lock
   * and waits at most `busyTimeoutMs` for it or for another process's
   * reader). True when the WAL was restarted; false when it was busy, the
   * thread did not answer within `timeoutMs`, or the checkpointer is closed.
   */
  restart(options: { busyTimeoutMs?: number; timeoutMs?: number } = {}): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    const id = this.nextId++;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => this.settle(id, false), options.timeoutMs ?? 5_000);
      this.restarts.set(id, (restarted) => {
        clearTimeout(timer);
        resolve(restarted);
      });
      this.worker.postMessage({ type: "restart", id, busyTimeoutMs: options.busyTimeoutMs ?? 100 });
    });
  }

  private settle(id: number, restarted: boolean): void {
    const done = this.restarts.get(id);
    this.restarts.delete(id);
    done?.(restarted);
  }

  /** A last checkpoint that empties the WAL, then the thread ends. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const id of [...this.restarts.keys()]) this.settle(id, false);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 10_000);
      this.worker.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      this.worker.on("message", (m: { type: string }) => {
        if (m.type === "closed") void this.worker.terminate();
      });
      this.worker.postMessage({ type: "close" });
    });
  }
}
