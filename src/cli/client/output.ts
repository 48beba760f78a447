/**
 * What the client verbs print: human text (aligned tables, key/value blocks,
 * relative times, colour only on a terminal) or JSON for scripts. Data goes
 * to stdout, notices and errors to stderr.
 */

/** Colour functions; identity when colour is off. */
export interface Colors {
  bold(s: string): string;
  dim(s: string): string;
  green(s: string): string;
  red(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
}

const ansi = (open: number, close: number) => (s: string) => `\u001b[${open}m${s}\u001b[${close}m`;
const plain = (s: string) => s;

/** Colour when stdout is a terminal and NO_COLOR is unset or empty (https://no-color.org). */
export function colorsFor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): Colors {
  const on = stream.isTTY === true && (env.NO_COLOR ?? "") === "";
  if (!on) return { bold: plain, dim: plain, green: plain, red: plain, yellow: plain, cyan: plain };
  return { bold: ansi(1, 22), dim: ansi(2, 22), green: ansi(32, 39), red: ansi(31, 39), yellow: ansi(33, 39), cyan: ansi(36, 39) };
}

/** The printing context of one verb. */
export interface Output {
  json: boolean;
  color: Colors;
  /** The time relative times are measured from. */
  now(): number;
  /** A line (or block) on stdout. */
  out(text: string): void;
  /** A notice on stderr (never data). */
  note(text: string): void;
}

/** An Output on the process's streams. */
export function createOutput(json: boolean): Output {
  return {
    json,
    color: colorsFor(process.stdout),
    now: Date.now,
    out: (text) => void process.stdout.write(text.endsWith("\n") ? text : `${text}\n`),
    note: (text) => void process.stderr.write(text.endsWith("\n") ? text : `${text}\n`),
  };
}

const ESCAPES = /\u001b\[[0-9;]*m/g;

/** Display width of `s`, without colour escapes. */
export function width(s: string): number {
  return s.replace(ESCAPES, "").length;
}

function pad(s: string, n: number): string {
  return s + " ".repeat(Math.max(0, n - width(s)));
}

/** Rows under a header, columns aligned, two spaces apart; the last column is not padded. */
export function table(header: string[], rows: string[][], color: Colors): string {
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ""))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : pad(c, widths[i]!)))
      .join("  ")
      .trimEnd();
  return [color.bold(line(header)), ...rows.map(line)].join("\n");
}

/** `key  value` lines, keys aligned; entries with an undefined value are left out. */
export function fields(entries: [string, string | undefined][], color: Colors, indent = "  "): string {
  const shown = entries.filter((e): e is [string, string] => e[1] !== undefined);
  const w = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${indent}${color.dim(pad(k, w))}  ${v}`).join("\n");
}

/** A span of milliseconds in at most two units: 45s, 59m, 1h 5m, 2d 3h. */
export function span(ms: number): string {
  const s = Math.floor(Math.abs(ms) / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 === 0 ? `${h}h` : `${h}h ${m % 60}m`;
  const d = Math.floor(h / 24);
  return h % 24 === 0 ? `${d}d` : `${d}d ${h % 24}h`;
}

/** `at` relative to `now`: "in 59m", "3m ago", "now". */
export function relative(at: number, now: number): string {
  const diff = at - now;
  if (Math.abs(diff) < 1000) return "now";
  return diff > 0 ? `in ${span(diff)}` : `${span(diff)} ago`;
}

/** An instant for people: "in 59m (2026-11-23T10:00:00Z)". */
export function when(at: number, now: number): string {
  return `${relative(at, now)} (${new Date(at).toISOString().replace(/\.\d{3}Z$/, "Z")})`;
}

/** Lists for people: "a, b" or "-" when empty. */
export function listOf(items: readonly string[]): string {
  return items.length === 0 ? "-" : items.join(", ");
}
