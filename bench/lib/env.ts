/** Bench settings from the environment: a value that is not what the setting takes is refused, naming it. */

/** A number in min..max (an integer when `integer`), or `def` when unset or empty. */
export function envNumber(key: string, def: number, min: number, max: number, options: { integer?: boolean } = {}): number {
  const raw = process.env[key]?.trim();
  if (raw === undefined || raw === "") return def;
  const n = Number(raw);
  const kind = options.integer ? "an integer" : "a number";
  if (!(options.integer ? Number.isInteger(n) : Number.isFinite(n)) || n < min || n > max) {
    throw new Error(`${key} must be ${kind} in ${min}..${max}, got "${raw}"`);
  }
  return n;
}

/** `MIN-MAX` within min..max, or `def` when unset or empty. */
export function envRange(key: string, def: [number, number], min: number, max: number): [number, number] {
  const raw = process.env[key]?.trim();
  if (raw === undefined || raw === "") return def;
  const m = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(raw);
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || lo < min || hi > max || lo > hi) throw new Error(`${key} must be MIN-MAX within ${min}..${max}, got "${raw}"`);
  return [lo, hi];
}
