/**
 * The read model behind GetDelegation, in this process: the cost of one
 * get() when status checks are spread over many delegations, so that
 * entries keep ageing out and being made again (each is answered from
 * memory for READ_MODEL_MAX_AGE_MS, 1 s by default, then read again).
 *
 * For each working set of N delegations, reads go round-robin over them,
 * in two cases: "churn", the clock moving 1.5 s per N reads, so every read
 * finds its entry aged out, sweeps it and makes it again (the model's
 * bookkeeping at its busiest: a delete and an insert per read, which is
 * where a Map's holes come from), and "hits", the clock still, every read
 * after the first N answered from memory. The source answers at once from
 * a Map; the baseline, in the same run and the same loop, is that Map read
 * directly. The ratios show what the model adds, and that it does not grow
 * with N.
 *
 *   npx tsx bench/read-model.ts
 *   READ_MODEL_SETS=1000,100000 READ_MODEL_READS=2000000 npx tsx bench/read-model.ts
 */
import type { Delegation } from "../src/domain/index.js";
import { DelegationReadModel } from "../src/events/read-model.js";
import { envNumber } from "./lib/env.js";
import { benchDelegation } from "./lib/seed.js";

const READS = envNumber("READ_MODEL_READS", 1_000_000, 1000, 100_000_000, { integer: true });
const ROUNDS = envNumber("READ_MODEL_ROUNDS", 3, 1, 20, { integer: true });
const SETS = (process.env.READ_MODEL_SETS ?? "1000,10000,50000,100000").split(",").map((s) => {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new Error(`READ_MODEL_SETS: "${s}" is not a whole number from 1 to 1,000,000`);
  return n;
});

function source(rows: Map<string, Delegation>) {
  return {
    get: async (id: string) => rows.get(id) ?? null,
    onCommit: () => () => undefined,
  };
}

/** µs per read over READS reads spread round-robin over `ids`, calling `tick` before each. */
async function measure(ids: string[], read: (id: string) => Promise<unknown>, tick: () => void): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < READS; i++) {
    tick();
    await read(ids[i % ids.length]!);
  }
  return ((performance.now() - t0) * 1000) / READS;
}

const now0 = Date.now();
console.log(`read model: ${READS.toLocaleString("en")} reads per case, median of ${ROUNDS} rounds; node ${process.version}`);
console.log("delegations   churn µs/get   hits µs/get   Map µs/get   churn / Map   hits / Map");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results = [];
for (const n of SETS) {
  const rows = new Map<string, Delegation>();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const d = benchDelegation(i, { delegatorDid: "did:web:example.com/user/alice", createTime: now0, updateTime: now0, expireTime: now0 + 3_600_000 });
    rows.set(d.id, d);
    ids.push(d.id);
  }
  const src = source(rows);
  const churn: number[] = [];
  const hits: number[] = [];
  const plain: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    for (const [out, step] of [[churn, 1500 / n], [hits, 0]] as const) {
      let now = now0;
      const m = new DelegationReadModel(src, { clock: () => now, maxAgeMs: 1000, maxEntries: 1_000_000 });
      m.startAt(1n);
      out.push(await measure(ids, (id) => m.get(id), () => (now += step)));
      m.close();
    }
    plain.push(await measure(ids, (id) => src.get(id), () => undefined));
  }
  const row = {
    delegations: n,
    churnUs: +median(churn).toFixed(3),
    hitsUs: +median(hits).toFixed(3),
    mapUs: +median(plain).toFixed(3),
    churnRatio: +(median(churn) / median(plain)).toFixed(2),
    hitsRatio: +(median(hits) / median(plain)).toFixed(2),
  };
  results.push(row);
  const cell = (x: number, w: number) => x.toFixed(3).padStart(w);
  console.log(
    `${String(n).padStart(11)}   ${cell(row.churnUs, 12)}   ${cell(row.hitsUs, 11)}   ${cell(row.mapUs, 10)}   ${row.churnRatio.toFixed(2).padStart(11)}   ${row.hitsRatio.toFixed(2).padStart(10)}`,
  );
}
console.log(JSON.stringify({ bench: "read-model", reads: READS, rounds: ROUNDS, results }));
