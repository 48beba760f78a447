/**
 * A Headers for the grpc-js adapter's calls. The fetch Headers class
 * validates and normalises every name and value on the way in, which is a
 * measurable share of a small RPC's cost (see the Benchmarks section of the
 * README); gRPC metadata reaches the adapter already parsed by Node's HTTP/2
 * layer (names lower-case, values checked), so this one only keeps them.
 * It behaves as Headers does for what the broker and Connect use: names are
 * case-insensitive, `append` joins values with ", ", iteration is sorted by
 * name.
 */
export class LightHeaders implements Headers {
  private readonly map: Map<string, string>;

  /** `init` must already have lower-case names (as gRPC metadata has). */
  constructor(init?: Record<string, string>) {
    this.map = init ? new Map(Object.entries(init)) : new Map();
  }

  append(name: string, value: string): void {
    const key = name.toLowerCase();
    const prior = this.map.get(key);
    this.map.set(key, prior === undefined ? String(value) : `${prior}, ${value}`);
  }

  delete(name: string): void {
    this.map.delete(name.toLowerCase());
  }

  get(name: string): string | null {
    return this.map.get(name.toLowerCase()) ?? null;
  }

  getSetCookie(): string[] {
    const v = this.map.get("set-cookie");
    return v === undefined ? [] : [v];
  }

  has(name: string): boolean {
    return this.map.has(name.toLowerCase());
  }

  set(name: string, value: string): void {
    this.map.set(name.toLowerCase(), String(value));
  }

  forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) callback.call(thisArg, v, k, this);
  }

  *entries(): IterableIterator<[string, string]> {
    const keys = [...this.map.keys()].sort();
    for (const k of keys) yield [k, this.map.get(k)!];
  }

  *keys(): IterableIterator<string> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): IterableIterator<string> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }
}
