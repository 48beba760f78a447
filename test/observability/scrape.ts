/** Reads a broker's /metrics page: the exposition text and its samples by name and labels. */
import { expect } from "vitest";

export interface Scrape {
  text: string;
  /** The value of `name` with exactly these labels; 0 when the series is absent. */
  value(name: string, labels?: Record<string, string>): number;
  /** Every series of `name`, as label sets with their values. */
  series(name: string): { labels: Record<string, string>; value: number }[];
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function key(name: string, labels: Record<string, string>): string {
  return `${name}{${Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(",")}}`;
}

/** Parses the Prometheus text format (as prom-client writes it). */
export function parseMetrics(text: string): Scrape {
  const samples = new Map<string, number>();
  const byName = new Map<string, { labels: Record<string, string>; value: number }[]>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) labels[l[1]!] = l[2]!;
    const value = m[3] === "+Inf" ? Number.POSITIVE_INFINITY : Number(m[3]);
    samples.set(key(m[1]!, labels), value);
    const list = byName.get(m[1]!) ?? [];
    list.push({ labels, value });
    byName.set(m[1]!, list);
  }
  return {
    text,
    value: (name, labels = {}) => samples.get(key(name, labels)) ?? 0,
    series: (name) => byName.get(name) ?? [],
  };
}

/** GETs /metrics from the web port and checks the answer is the Prometheus text format. */
export async function scrape(webPort: number): Promise<Scrape> {
  const res = await fetch(`http://127.0.0.1:${webPort}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  return parseMetrics(await res.text());
}
