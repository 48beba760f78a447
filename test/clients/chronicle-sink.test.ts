/**
 * The Chronicle audit sink against a fake Chronicle on a real loopback
 * server: the prototype's Forgejo push webhook, the delivery id Chronicle
 * de-duplicates by, and which answers are durable, temporary or permanent.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AuditSink } from "../../src/clients/chronicle/index.js";
import { canonicalJson, chroniclePayload, contentId, createChronicleSink, eventContentId } from "../../src/clients/chronicle/index.js";
import type { ChronicleKind } from "../../src/clients/chronicle/index.js";
import { HttpClient, UpstreamError } from "../../src/clients/http/http-client.js";
import type { Delegation, DelegationEvent, EventType } from "../../src/domain/index.js";
import { type ChronicleDelivery, ChronicleFake } from "../fakes/chronicle-fake.js";
import { type Failure, asCaller, callerCode, isFailure } from "../helpers/caller-code.js";

const BROKER_DID = "did:web:guildhouse.dev/service/llm-broker";
const ALICE = "did:web:example.com/user/alice";
const T0 = Date.parse("2026-11-23T12:00:00Z");

function delegation(over: Partial<Delegation> = {}): Delegation {
  const id = "del_01JD5S8W3X9Y7Z6A5B4C3D2E1F";
  return {
    id,
    state: "ACTIVE",
    agentType: "claude-code",
    agentModel: "claude-opus",
    agentDid: `did:web:guildhouse.dev/agent/claude-code-${id}`,
    agentClientId: `agent-claude-code-${id}`,
    idpObjectId: "8d2f5c1e",
    idpBackend: "stub",
    delegatorDid: ALICE,
    delegatorAcId: "ac-alice",
    delegatedAcId: "ac-1",
    delegatedAc: null,
    capabilityCeiling: "CAP_MUTATE",
    ceremonyRequiredFor: ["delete", "destroy", "drop"],
    prohibitedCommands: ["rm -rf /"],
    inheritCorpus: true,
    inheritContexts: true,
    accordTemplate: "ai-delegation-standard",
    maxCommands: 500,
    commandsExecuted: 7,
    depth: 1,
    createTime: T0,
    updateTime: T0,
    expireTime: T0 + 3_600_000,
    endTime: null,
    endReason: "",
    endDetail: "",
    rootAcId: "ac-alice",
    chronicleCid: "",
    ...over,
  };
}

/** A stored event with the content id the store would have given it. */
function event(revision: bigint, type: EventType, reason = "", over: Partial<Delegation> = {}): DelegationEvent {
  const base = { revision, type, delegation: delegation(over), eventTime: T0 + Number(revision) * 1000, reason };
  return { ...base, chronicleCid: eventContentId(base as DelegationEvent) } as DelegationEvent;
}

const created = () => event(1n, "CREATED", "created");
const cidOf = (e: DelegationEvent) => eventContentId(e);

/** The content id Chronicle can compute from what it received, without the broker's help. */
function recomputedCid(d: ChronicleDelivery): string {
  const ref = d.body.ref as string;
  const kind = ref.replace(/^refs\/llm-broker\//, "") as ChronicleKind;
  const message = (d.body.commits as { message: string }[])[0]!.message;
  expect(message.startsWith(`${kind}: `)).toBe(true);
  const body = JSON.parse(message.slice(kind.length + 2)) as Record<string, unknown>;
  return contentId({ kind, body });
}

let fake: ChronicleFake;
let sink: AuditSink;
let sleeps: number[];

function makeSink(o: { timeoutMs?: number; maxRetries?: number } = {}): AuditSink {
  return createChronicleSink({
    webhookUrl: fake.webhookUrl,
    brokerDid: BROKER_DID,
    http: new HttpClient({
      system: "chronicle",
      timeoutMs: o.timeoutMs ?? 2_000,
      maxRetries: o.maxRetries ?? 2,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    }),
  });
}

async function rejection(p: Promise<unknown>): Promise<Failure> {
  const outcome = await p.then(
    () => ({ ok: true as const }),
    (e: unknown) => ({ ok: false as const, e }),
  );
  if (outcome.ok) throw new Error("expected a rejection");
  expect(isFailure(outcome.e)).toBe(true);
  return outcome.e as Failure;
}

beforeEach(async () => {
  sleeps = [];
  fake = await ChronicleFake.start();
  sink = makeSink();
});

afterEach(async () => {
  await sink.close();
  await fake.close();
});

describe("the webhook", () => {
  it("POSTs the prototype's Forgejo push webhook, named by the event's content id", async () => {
    expect(sink.mode).toBe("chronicle");
    const e = created();
    const cid = cidOf(e);
    await sink.deliver(e, cid);
    const [d] = fake.received();
    expect(fake.received()).toHaveLength(1);
    expect(d!.event).toBe("push");
    expect(d!.deliveryId).toBe(cid);
    expect(d!.headers["content-type"]).toBe("application/json");
    const payload = chroniclePayload("CREATED", e.delegation, e.eventTime, e.reason, e.revision);
    expect(d!.body).toStrictEqual({
      pusher: { login: ALICE },
      ref: "refs/llm-broker/DELEGATION_CREATED",
      after: cid,
      repository: { full_name: "llm-broker/delegation" },
      commits: [{ id: cid, message: `DELEGATION_CREATED: ${canonicalJson(payload.body)}` }],
    });
  });

  const kinds: [string, DelegationEvent, ChronicleKind, string][] = [
    ["CREATED", created(), "DELEGATION_CREATED", "0x3001"],
    ["REVOKED", event(2n, "REVOKED", "manual_revocation"), "DELEGATION_REVOKED", "0x3003"],
    ["REVOKED by cascade", event(3n, "REVOKED", "delegator_ac_revoked"), "DELEGATION_CASCADE_REVOKED", "0x3007"],
    ["EXPIRED", event(4n, "EXPIRED", "ttl_elapsed"), "DELEGATION_EXPIRED", "0x3004"],
    ["FAILED", event(5n, "FAILED", "creation_failed"), "DELEGATION_FAILED", "0x3005"],
    ["COMMAND_LIMIT_REACHED", event(6n, "COMMAND_LIMIT_REACHED", "command_limit"), "DELEGATION_COMMAND_LIMIT_REACHED", "0x3006"],
  ];
  it.each(kinds)("%s: Chronicle recomputes the delivery id from the body it received", async (_name, e, kind, code) => {
    await sink.deliver(e, cidOf(e));
    const [d] = fake.received();
    expect(d!.body.ref).toBe(`refs/llm-broker/${kind}`);
    expect(recomputedCid(d!)).toBe(d!.deliveryId);
    expect(d!.deliveryId).toBe(e.chronicleCid);
    const body = JSON.parse((d!.body.commits as { message: string }[])[0]!.message.slice(kind.length + 2)) as Record<string, unknown>;
    expect(body.event_code).toBe(code);
    expect(body.revision).toBe(e.revision.toString());
  });

  it("names the broker as pusher of an event without a delegator DID", async () => {
    const e = event(1n, "EXPIRED", "ttl_elapsed", { delegatorDid: "" });
    await sink.deliver(e, cidOf(e));
    expect(fake.received()[0]!.body.pusher).toStrictEqual({ login: BROKER_DID });
  });

  it("refuses, before sending anything, a cid that is not the event's content id", async () => {
    const e = created();
    const other = event(2n, "REVOKED", "manual_revocation");
    const err = await rejection(sink.deliver(e, cidOf(other)));
    expect(callerCode(err)).toBe("INTERNAL");
    expect(err.reason).toBe("CHRONICLE_CID_MISMATCH");
    expect(fake.attempts).toHaveLength(0);
  });

  it("delivers events in the order given", async () => {
    const events = [created(), event(2n, "REVOKED", "manual_revocation"), event(3n, "EXPIRED", "ttl_elapsed")];
    for (const e of events) await sink.deliver(e, cidOf(e));
    expect(fake.received().map((d) => d.deliveryId)).toEqual(events.map(cidOf));
  });
});

describe("outcomes", () => {
  it.each([200, 201, 202, 204])("takes %i as durably recorded", async (status) => {
    fake.failNext(1, status);
    await expect(sink.deliver(created(), cidOf(created()))).resolves.toBeUndefined();
    expect(fake.attempts).toHaveLength(1);
  });

  it("repeats a delivery answered 500, and Chronicle records it once", async () => {
    fake.failNext(1, 500);
    await sink.deliver(created(), cidOf(created()));
    expect(fake.attempts).toHaveLength(2);
    expect(fake.received()).toHaveLength(1);
    expect(fake.duplicates).toBe(0);
  });

  it("reports 5xx that outlast the retries as an UpstreamError, to try again later", async () => {
    fake.failNext(3, 503);
    const err = await rejection(sink.deliver(created(), cidOf(created())));
    expect(err).toBeInstanceOf(UpstreamError);
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.reason).toBe("CHRONICLE_UNAVAILABLE");
    expect((err as UpstreamError).status).toBe(503);
    expect(fake.attempts).toHaveLength(3);
    expect(fake.received()).toHaveLength(0);
  });

  it.each([400, 404, 409, 413, 422])("takes %i as a permanent rejection, CHRONICLE_REJECTED, and does not repeat it", async (status) => {
    fake.failNext(1, status, "payload refused: unknown repository");
    const err = await rejection(sink.deliver(created(), cidOf(created())));
    // A refusal for good: the outbox records it as rejected instead of retrying.
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({ failure: "rejected", retryable: false, status });
    expect(err.reason).toBe("CHRONICLE_REJECTED");
    expect(err.message).toContain("unknown repository");
    expect(fake.attempts).toHaveLength(1);
  });

  it("takes a 408 as temporary, not as a rejection", async () => {
    fake.failNext(1, 408);
    const err = await rejection(sink.deliver(created(), cidOf(created())));
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).status).toBe(408);
  });

  it("repeats a delivery answered 429 after the Retry-After", async () => {
    fake.failNext(1, 429);
    await sink.deliver(created(), cidOf(created()));
    expect(fake.received()).toHaveLength(1);
    expect(fake.attempts).toHaveLength(2);
  });

  it("reports a 429 that outlasts the retries as an UpstreamError, not a rejection", async () => {
    fake.failNext(3, 429);
    const err = await rejection(sink.deliver(created(), cidOf(created())));
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).status).toBe(429);
  });

  it("reports Chronicle down as UNAVAILABLE, and delivers once it is back up", async () => {
    await fake.down();
    const err = await rejection(sink.deliver(created(), cidOf(created())));
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).failure).toBe("unreachable");
    expect(callerCode(err)).toBe("UNAVAILABLE");
    await fake.up();
    await sink.deliver(created(), cidOf(created()));
    expect(fake.received()).toHaveLength(1);
  });

  it("reports a delivery Chronicle is too slow to answer as DEADLINE_EXCEEDED; the redelivery is a duplicate", async () => {
    const slow = makeSink({ timeoutMs: 150, maxRetries: 0 });
    try {
      fake.delayNext(1, 400);
      const err = await rejection(slow.deliver(created(), cidOf(created())));
      expect(err).toBeInstanceOf(UpstreamError);
      expect(callerCode(err)).toBe("DEADLINE_EXCEEDED");
      expect(err.reason).toBe("CHRONICLE_TIMEOUT");
      // The slow server still records it; the outbox, not knowing, delivers it again.
      await fake.waitForReceived(1);
      await slow.deliver(created(), cidOf(created()));
      expect(fake.received()).toHaveLength(1);
      expect(fake.duplicates).toBe(1);
    } finally {
      await slow.close();
    }
  });

  it("repeats an attempt that timed out, since the delivery id makes repeating harmless", async () => {
    const slow = makeSink({ timeoutMs: 150, maxRetries: 2 });
    try {
      fake.delayNext(1, 400);
      await slow.deliver(created(), cidOf(created()));
      expect(fake.attempts).toHaveLength(2);
      await fake.waitForDeliveries(2);
      expect(fake.received()).toHaveLength(1);
      expect(fake.duplicates).toBe(1);
    } finally {
      await slow.close();
    }
  });

  it("delivers the same event twice harmlessly: at-least-once", async () => {
    await sink.deliver(created(), cidOf(created()));
    await sink.deliver(created(), cidOf(created()));
    expect(fake.deliveries).toHaveLength(2);
    expect(fake.received()).toHaveLength(1);
    expect(fake.duplicates).toBe(1);
  });
});
