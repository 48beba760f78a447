/**
 * A batch size that follows what a batch costs: a background task (pruning)
 * that deletes a fixed number of rows per transaction holds the write lock,
 * and on SQLite the event loop, for as long as those rows take, which varies
 * with the rows (one index entry or several, pages cached or not) more than
 * with their number: measured while pruning 1,000,000 events on SQLite,
 * 2,000 events took 15–125 ms per statement. After each batch the size is
 * halved when the batch took over twice the target and doubled when a full
 * batch took under half of it; between the two it stays.
 */
export interface BatchSizeOptions {
  /** The size of the first batch. */
  initial: number;
  min: number;
  max: number;
  /** What a batch should take, in milliseconds. */
  targetMs: number;
}

export class BatchSize {
  private current: number;

  constructor(private readonly options: BatchSizeOptions) {
    const { initial, min, max, targetMs } = options;
    if (!(Number.isInteger(min) && min >= 1 && Number.isInteger(max) && max >= min && initial >= min && initial <= max && targetMs > 0)) {
      throw new RangeError(`batch size: need 1 <= min <= initial <= max and a positive target (got ${JSON.stringify(options)})`);
    }
    this.current = Math.floor(initial);
  }

  /** The size of the next batch. */
  get value(): number {
    return this.current;
  }

  /** A batch of `value` rows took `ms`; `full` when it found as many rows as it was allowed. */
  record(ms: number, full: boolean): void {
    const { min, max, targetMs } = this.options;
    if (ms > 2 * targetMs) this.current = Math.max(min, Math.floor(this.current / 2));
    else if (full && ms < targetMs / 2) this.current = Math.min(max, this.current * 2);
  }
}
