/**
 * GetDelegation's pre-encoded answer decodes to exactly the message
 * delegationToMessage builds, for live and ended delegations, spent and
 * unspent budgets, whole and fractional seconds left; and a count made on
 * the same object after the fixed part was encoded shows in the next answer.
 */
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { Delegation } from "../../src/domain/index.js";
import { GetDelegationResponseSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { delegationToMessage } from "../../src/server/convert.js";
import { encodeGetDelegationResponse, getDelegationAnswer } from "../../src/server/encoded-delegation.js";
import { preEncodedOf } from "../../src/server/pre-encoded.js";
import { HOUR, T0, makeDelegation } from "../store/fixtures.js";

function expected(d: Delegation, now: number) {
  return create(GetDelegationResponseSchema, { delegation: delegationToMessage(d, now) });
}

const cases: [string, Delegation, number][] = [
  ["active, nothing counted", makeDelegation({ state: "ACTIVE", agentClientId: "agent-1", delegatedAcId: "ac-9" }), T0 + 1234],
  ["active, some counted, whole seconds left", makeDelegation({ state: "ACTIVE", commandsExecuted: 42 }), T0 + 2000],
  ["active, budget spent", makeDelegation({ state: "ACTIVE", commandsExecuted: 100 }), T0 + 1],
  ["active, past its expiry", makeDelegation({ state: "ACTIVE", commandsExecuted: 3 }), T0 + 2 * HOUR],
  ["requested", makeDelegation(), T0 + 999],
  [
    "revoked, with end fields",
    makeDelegation({ state: "REVOKED", commandsExecuted: 7, endTime: T0 + 5000, endReason: "manual_revocation", endDetail: "done", chronicleCid: "bafy" }),
    T0 + 6000,
  ],
  ["no rules, depth 2", makeDelegation({ state: "ACTIVE", ceremonyRequiredFor: [], prohibitedCommands: [], depth: 2, inheritCorpus: false }), T0],
  // Varints of several bytes in every moving field.
  ["large counts, a year left", makeDelegation({ state: "ACTIVE", maxCommands: 2_000_000_000, commandsExecuted: 123_456_789, expireTime: T0 + 365 * 24 * HOUR }), T0 + 1],
  // A negative count (never written by the broker) goes through the writer, as protobuf has it: ten bytes.
  ["a negative count", makeDelegation({ state: "ACTIVE", commandsExecuted: -5 }), T0],
];

describe("pre-encoded GetDelegation answers", () => {
  it.each(cases)("decode to delegationToMessage's message: %s", (_name, d, now) => {
    const bytes = encodeGetDelegationResponse(d, now);
    const decoded = fromBinary(GetDelegationResponseSchema, bytes);
    expect(equals(GetDelegationResponseSchema, decoded, expected(d, now))).toBe(true);
    // Same size as the canonical encoding: nothing sent twice.
    expect(bytes.length).toBe(toBinary(GetDelegationResponseSchema, expected(d, now)).length);
  });

  it("shows a count made on the same object after its fixed part was encoded", () => {
    const d = makeDelegation({ state: "ACTIVE", commandsExecuted: 1 });
    encodeGetDelegationResponse(d, T0);
    d.commandsExecuted = 2;
    const decoded = fromBinary(GetDelegationResponseSchema, encodeGetDelegationResponse(d, T0));
    expect(decoded.delegation!.commandsExecuted).toBe(2);
    expect(decoded.delegation!.commandsRemaining).toBe(98);
  });

  it("answers Connect with the message and grpc-js with the bytes, both as of one moment", () => {
    const d = makeDelegation({ state: "ACTIVE", expireTime: Date.now() + HOUR });
    const answer = getDelegationAnswer(d);
    const viaConnect = create(GetDelegationResponseSchema, answer);
    const viaGrpc = fromBinary(GetDelegationResponseSchema, preEncodedOf(answer)!);
    expect(equals(GetDelegationResponseSchema, viaConnect, viaGrpc)).toBe(true);
    expect(preEncodedOf({ delegation: {} })).toBeUndefined();
  });
});
