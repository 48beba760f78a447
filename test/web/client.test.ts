/**
 * The client entry points other projects use (src/client): the Node client
 * over Connect, gRPC-Web and gRPC, the browser client (connect-web, on
 * Node's own fetch here), the credentials they send, the error detail
 * helper, and followDelegations resuming after the broker restarts, starting
 * over when the revision is out of range, and giving up only where a retry
 * cannot help.
 */
import { createServer } from "node:net";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as node from "../../src/client/index.js";
import * as web from "../../src/client/web.js";
import { ALICE, type TestBroker, startTestBroker } from "../helpers/broker.js";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const MISSING = "del_01AAAAAAAAAAAAAAAAAAAAAAAA";

describe("client entry points", () => {
  let t: TestBroker;
  let webUrl: string;
  const grpcUrl = () => `http://127.0.0.1:${t.broker.grpcPort}`;

  beforeAll(async () => {
    const webPort = await freePort();
    t = await startTestBroker({ env: { LLM_BROKER_WEB_PORT: String(webPort), WATCH_CHECKPOINT_SECONDS: "1" } });
    webUrl = `http://127.0.0.1:${webPort}`;
  });
  afterAll(async () => {
    await t?.close();
  });

  it.each(["connect", "grpc-web", "grpc"] as const)("the Node client over %s creates and reads as the DID, and gives the broker's error detail", async (transport) => {
    const client = node.createBrokerClient({ baseUrl: transport === "grpc" ? grpcUrl() : webUrl, transport, did: ALICE });
    const created = await client.createDelegation({ delegatorAcId: "ac-alice", scope: { capabilityCeiling: "CAP_READ", maxCommands: 3 } });
    expect(created.delegation).toMatchObject({ delegatorDid: ALICE, state: node.DelegationState.ACTIVE, capabilityCeiling: "CAP_READ" });
    const got = await client.getDelegation({ delegationId: created.delegation!.delegationId });
    expect(got.delegation!.commandsRemaining).toBe(3);
    const err = await client.getDelegation({ delegationId: MISSING }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(node.ConnectError);
    expect((err as ConnectError).code).toBe(node.Code.NotFound);
    expect(node.errorDetailOf(err)?.reason).toBe("DELEGATION_NOT_FOUND");
  });

  it.each(["connect", "grpc-web"] as const)("the browser client over %s (on fetch) works against the web port", async (transport) => {
    const client = web.createBrokerClient({ baseUrl: webUrl, transport, did: ALICE });
    const created = await client.createDelegation({ delegatorAcId: "ac-alice" });
    const listed = await client.listAgents({ pageSize: 500 });
    expect(listed.delegations.map((d) => d.delegationId)).toContain(created.delegation!.delegationId);
    expect(web.errorDetailOf(await client.revokeDelegation({ delegationId: MISSING }).catch((e: unknown) => e))?.reason).toBe("DELEGATION_NOT_FOUND");
  });

  it("sends the token as Authorization and the DID as x-delegator-did; a header the caller sets wins; line breaks are refused", async () => {
    const seen: Headers[] = [];
    const transport = createRouterTransport(
      ({ service }) => {
        service(node.DelegationService, {
          getDelegation(_req, ctx) {
            seen.push(ctx.requestHeader);
            return {};
          },
        });
      },
      { transport: { interceptors: [node.credentialsInterceptor({ token: "tok-1", did: ALICE })] } },
    );
    const client = createClient(node.DelegationService, transport);
    await client.getDelegation({});
    await client.getDelegation({}, { headers: { authorization: "Bearer mine" } });
    expect(seen[0]!.get("authorization")).toBe("Bearer tok-1");
    expect(seen[0]!.get(node.DEV_DID_HEADER)).toBe(ALICE);
    expect(seen[1]!.get("authorization")).toBe("Bearer mine");
    expect(() => node.credentialsInterceptor({ token: "a\r\nx-evil: 1" })).toThrow(/line breaks/);
  });

  it("followDelegations: from now, then events; after a restart it resumes from the last revision and misses nothing", async () => {
    const client = node.createBrokerClient({ baseUrl: webUrl, did: ALICE });
    const abort = new AbortController();
    const items: node.FollowItem[] = [];
    let wake: () => void = () => {};
    const follow = (async () => {
      for await (const item of node.followDelegations(client, { signal: abort.signal, minBackoffMs: 200, maxBackoffMs: 400 })) {
        items.push(item);
        wake();
      }
    })();
    const until = async (what: string, ok: () => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!ok()) {
        if (Date.now() > deadline) throw new Error(`not within 10 s: ${what}; got ${items.map((i) => i.kind).join(",")}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 100);
        });
      }
    };
    const created = (id: string) => items.some((i) => i.kind === "event" && i.event.type === node.DelegationEventType.CREATED && i.event.delegation?.delegationId === id);
    try {
      await until("the first checkpoint", () => items.some((i) => i.kind === "checkpoint"));
      expect(items[0]).toEqual({ kind: "reset" });
      const before = (await t.connect.createDelegation({ delegatorAcId: "ac-alice" }, { headers: { [node.DEV_DID_HEADER]: ALICE } })).delegation!;
      await until("the CREATED event", () => created(before.delegationId));

      await t.restart();
      // Created right after the restart, most likely while the follower waits to reconnect: it must come by replay.
      const after = (await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, { [node.DEV_DID_HEADER]: ALICE })).delegation!;
      await until("the CREATED event after the restart", () => created(after.delegationId));
      const disconnected = items.find((i) => i.kind === "disconnected");
      expect(disconnected).toMatchObject({ kind: "disconnected" });
      // Resumed, not restarted from now: exactly one reset (the first), and revisions only grow.
      expect(items.filter((i) => i.kind === "reset")).toHaveLength(1);
      const revisions = items.flatMap((i) => (i.kind === "event" || i.kind === "checkpoint" ? [i.revision] : []));
      expect([...revisions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(revisions);
    } finally {
      abort.abort();
      await follow;
    }
  });

  it("followDelegations: a revision ahead of the log (OUT_OF_RANGE) starts over from now, with a reset to re-list", async () => {
    const client = node.createBrokerClient({ baseUrl: webUrl, did: ALICE });
    const abort = new AbortController();
    const kinds: string[] = [];
    for await (const item of node.followDelegations(client, { signal: abort.signal, startRevision: 1_000_000_000n })) {
      kinds.push(item.kind);
      if (item.kind === "checkpoint") break;
    }
    abort.abort();
    expect(kinds).toEqual(["reset", "checkpoint"]);
  });

  it("followDelegations throws what a retry cannot fix (UNAUTHENTICATED)", async () => {
    const client = node.createBrokerClient({ baseUrl: webUrl, did: "not-a-did" });
    const iterate = async () => {
      for await (const _ of node.followDelegations(client)) {
        // reset only
      }
    };
    const err = await iterate().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unauthenticated);
  });
});
