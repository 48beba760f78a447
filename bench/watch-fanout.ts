/**
 * Watch fan-out in one broker process: W watchers (1,000 and 10,000 by
 * default) hold WatchDelegations open; each round revokes one delegation and
 * measures, for every watcher, the time from the revoke's answer to its
 * REVOKED event, the revoke RPC itself, and a GetDelegation sent while the
 * fan-out runs. Also: the broker's CPU per delivered notification and its
 * memory per idle stream (heap and RSS, after a GC, divided by the streams).
 *
 *   npx tsx bench/watch-fanout.ts
 *   FANOUT_WATCHERS=1000,10000 FANOUT_ROUNDS=10 npx tsx bench/watch-fanout.ts
 */
import { fork } from "node:child_process";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { summarize } from "./lib/stats.js";
import { killAllServers, startServerProcess } from "./lib/server-process.js";
import { envNumber } from "./lib/env.js";

const sizes = (process.env.FANOUT_WATCHERS ?? "1000,10000").split(",").map(Number);
const rounds = envNumber("FANOUT_ROUNDS", 10, 1, 10_000, { integer: true });
const perSession = 100; // LIMIT_MAX_CONCURRENT_STREAMS
const ALICE = "did:web:example.com/user/alice";
const headers = { "x-delegator-did": ALICE };
const now = () => performance.timeOrigin + performance.now();

interface Stats {
  memory: { rss: number; heapUsed: number; external: number };
  fanOuts: { ms: number; deliveries: number }[];
}

function startClients(count: number) {
  const child = fork(fileURLToPath(new URL("./lib/watch-clients.ts", import.meta.url)), [], { execArgv: ["--import", "tsx"] });
  const next = (type: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const on = (m: Record<string, unknown>) => {
        if (m.type === "error") reject(new Error(String(m.message)));
        if (m.type !== type) return;
        child.off("message", on);
        resolve(m);
      };
      child.on("message", on);
    });
  return { child, count, next };
}

/** The same fan-out on a bare grpc-js server (bench/servers/fanout-baseline.ts): memory per idle stream, CPU per message, time to the last receipt. */
async function baseline(watchers: number) {
  const server = await startServerProcess("fanout-baseline.ts", {
    env: { LIMIT_MAX_CONCURRENT_STREAMS: String(perSession) },
    nodeArgs: ["--expose-gc"],
  });
  const before = await server.ask<Stats>({ type: "stats" }, "stats");
  const groups = watchers >= 2000 ? 2 : 1;
  const clients = Array.from({ length: groups }, (_, i) => startClients(Math.floor(watchers / groups) + (i === 0 ? watchers % groups : 0)));
  await Promise.all(
    clients.map((c) => {
      const opened = c.next("opened");
      c.child.send({ type: "open", port: server.ready.grpcPort, streams: c.count, perSession });
      return opened;
    }),
  );
  const idle = await server.ask<Stats>({ type: "stats" }, "stats");
  const latencies: number[] = [];
  const cpuStart = server.cpuSeconds() ?? Number.NaN;
  for (let r = 0; r < rounds; r++) {
    const received = clients.map((c) => c.next("received"));
    for (const c of clients) c.child.send({ type: "arm" });
    const fired = await server.ask<{ at: number }>({ type: "fire" }, "fired");
    for (const got of await Promise.all(received)) for (const t of got.times as number[]) latencies.push(t - fired.at);
  }
  const cpuS = (server.cpuSeconds() ?? Number.NaN) - cpuStart;
  for (const c of clients) c.child.send({ type: "close" });
  await server.stop();
  return {
    heapPerStream: (idle.memory.heapUsed - before.memory.heapUsed) / watchers,
    cpuUsPerMessage: (cpuS * 1e6) / (rounds * watchers),
    lastReceiptMs: summarize(latencies),
  };
}

async function run(watchers: number) {
  const base = await baseline(watchers);
  const server = await startServerProcess("broker.ts", {
    env: { LIMIT_WATCH_STREAMS_PER_PRINCIPAL: String(watchers), LIMIT_MAX_CONCURRENT_STREAMS: String(perSession), WATCH_BUFFER_EVENTS: "10000" },
    nodeArgs: ["--expose-gc"],
    ...(process.env.FANOUT_CPU_PROFILE_DIR ? { cpuProfileDir: process.env.FANOUT_CPU_PROFILE_DIR } : {}),
  });
  const client = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.ready.grpcPort}` }));
  const targets = [];
  for (let i = 0; i < rounds + 1; i++) targets.push((await client.createDelegation({ delegatorAcId: "ac-fanout" }, { headers })).delegation!.delegationId);
  const probeId = targets.pop()!;

  const before = await server.ask<Stats>({ type: "stats" }, "stats");
  // Two client processes share the watchers, so the clients' own decoding is not one core's queue.
  const groups = watchers >= 2000 ? 2 : 1;
  const clients = Array.from({ length: groups }, (_, i) => startClients(Math.floor(watchers / groups) + (i === 0 ? watchers % groups : 0)));
  await Promise.all(
    clients.map((c) => {
      const opened = c.next("opened");
      c.child.send({ type: "open", port: server.ready.grpcPort, streams: c.count, perSession });
      return opened;
    }),
  );
  const idle = await server.ask<Stats>({ type: "stats" }, "stats");
  if (process.env.FANOUT_HEAP_SNAPSHOT_DIR) {
    // Where the memory of an idle stream goes: a snapshot with the streams open (compare one with none).
    await server.ask({ type: "heap-snapshot", file: `${process.env.FANOUT_HEAP_SNAPSHOT_DIR}/idle-${watchers}.heapsnapshot` }, "heap-snapshot", 120_000);
  }
  const heapPerStream = (idle.memory.heapUsed - before.memory.heapUsed) / watchers;
  const rssPerStream = (idle.memory.rss - before.memory.rss) / watchers;

  const latencies: number[] = [];
  const revokeMs: number[] = [];
  const getMs: number[] = [];
  server.tell({ type: "stats-reset" });
  const cpuStart = server.cpuSeconds() ?? Number.NaN;
  for (const id of targets) {
    const received = clients.map((c) => c.next("received"));
    for (const c of clients) c.child.send({ type: "arm" });
    const t0 = performance.now();
    const revoke = client.revokeDelegation({ delegationId: id }, { headers });
    // An unrelated read while the fan-out runs.
    const g0 = performance.now();
    const get = client.getDelegation({ delegationId: probeId }, { headers }).then(() => getMs.push(performance.now() - g0));
    await revoke;
    const returned = now();
    revokeMs.push(performance.now() - t0);
    await get;
    for (const r of await Promise.all(received)) for (const t of r.times as number[]) latencies.push(t - returned);
  }
  const cpuS = (server.cpuSeconds() ?? Number.NaN) - cpuStart;
  const done = await server.ask<Stats>({ type: "stats" }, "stats");
  const fan = summarize(done.fanOuts.filter((f) => f.deliveries >= watchers).map((f) => f.ms));
  for (const c of clients) c.child.send({ type: "close" });
  await server.stop();

  const l = summarize(latencies);
  const r = summarize(revokeMs);
  const g = summarize(getMs);
  const result = {
    bench: "watch-fanout",
    watchers,
    rounds,
    deliveryAfterRevokeMs: { p50: +l.p50Ms.toFixed(2), p99: +l.p99Ms.toFixed(2), max: +l.maxMs.toFixed(2) },
    serverCommitToLastWriteMs: { p50: fan.p50Ms, max: fan.maxMs },
    revokeRpcMs: { p50: +r.p50Ms.toFixed(2), p99: +r.p99Ms.toFixed(2) },
    getDuringFanoutMs: { p50: +g.p50Ms.toFixed(2), max: +g.maxMs.toFixed(2) },
    cpuUsPerNotification: +((cpuS * 1e6) / (rounds * watchers)).toFixed(1),
    memoryPerIdleStream: { heapBytes: Math.round(heapPerStream), rssBytes: Math.round(rssPerStream) },
    baseline: {
      heapBytesPerIdleStream: Math.round(base.heapPerStream),
      cpuUsPerMessage: +base.cpuUsPerMessage.toFixed(1),
      deliveryAfterWriteMs: { p50: +base.lastReceiptMs.p50Ms.toFixed(2), p99: +base.lastReceiptMs.p99Ms.toFixed(2) },
    },
    vsBaseline: {
      cpuPerNotification: +((cpuS * 1e6) / (rounds * watchers) / base.cpuUsPerMessage).toFixed(2),
      heapPerIdleStream: +(heapPerStream / base.heapPerStream).toFixed(2),
    },
    loadavg: loadavg().map((x) => +x.toFixed(2)),
  };
  console.log(
    `${watchers} watchers: REVOKED delivered p50 ${result.deliveryAfterRevokeMs.p50} ms, p99 ${result.deliveryAfterRevokeMs.p99} ms after the revoke returned ` +
      `(server: commit to the last write p50 ${fan.p50Ms} / max ${fan.maxMs} ms); ` +
      `revoke RPC p50 ${result.revokeRpcMs.p50} ms; GetDelegation during fan-out p50 ${result.getDuringFanoutMs.p50} / max ${result.getDuringFanoutMs.max} ms; ` +
      `${result.cpuUsPerNotification} us CPU per notification; per idle stream ${result.memoryPerIdleStream.heapBytes} B heap, ${result.memoryPerIdleStream.rssBytes} B RSS\n` +
      `  bare grpc-js in the same run: ${result.baseline.cpuUsPerMessage} us CPU per message, ${result.baseline.heapBytesPerIdleStream} B heap per idle stream, ` +
      `delivery p50 ${result.baseline.deliveryAfterWriteMs.p50} / p99 ${result.baseline.deliveryAfterWriteMs.p99} ms after its writes began; ` +
      `broker/bare: CPU ${result.vsBaseline.cpuPerNotification}x, heap ${result.vsBaseline.heapPerIdleStream}x`,
  );
  console.log(JSON.stringify(result));
}

process.on("SIGINT", () => {
  killAllServers();
  process.exit(130);
});
try {
  console.log(`watch fan-out: ${sizes.join(", ")} watchers, ${rounds} revokes each; node ${process.version}; load ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  for (const w of sizes) await run(w);
} finally {
  killAllServers();
}
