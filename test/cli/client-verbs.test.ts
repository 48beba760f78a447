/**
 * The client verbs against a real broker (dev authentication, `--as` through
 * LLM_BROKER_AS), checked by what they print and their exit codes: the whole
 * life of a delegation as a person drives it, --json documents that parse,
 * an admin's revoke-context,
 * usage errors (exit 2, naming the option or value), the broker's own
 * message for its errors and one line for a broker that is not there (exit 1),
 * and no bearer token in anything printed.
 */
import { ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { cli, freePort } from "./cli-process.js";

let t: TestBroker;
let env: Record<string, string>;

beforeAll(async () => {
  t = await startTestBroker();
  env = { LLM_BROKER_ADDR: `127.0.0.1:${t.broker.grpcPort}`, LLM_BROKER_AS: ALICE };
});
afterAll(async () => t?.close());

const ID = /\b(del_[0-9A-Z]{26})\b/;
const CER = /\b(cer_[0-9A-Z]{26})\b/;

// Each case runs several CLI processes (about a second each on two cores).
describe("llm-broker client verbs", { timeout: 90_000 }, () => {
  it("delegate → get → list → authorize (0, 3, 4) → ceremony approve → authorize --ceremony-id → revoke, as printed", async () => {
    const made = await cli(["delegate", "--ac", "ac-alice-1", "--ceiling", "CAP_READ", "--max-commands", "10", "--ttl", "1h", "--prohibit", "rm -rf"], env);
    expect(made.code).toBe(0);
    const id = made.out.match(ID)![1]!;
    expect(made.out).toMatch(new RegExp(`^${id}  ACTIVE$`, "m"));
    const secret = made.out.match(/^ {2}client_secret {2}(\S+)$/m)![1]!;
    expect(made.out.split(secret)).toHaveLength(2); // printed once
    expect(made.err).toMatch(/^warning: the agent's client secret is printed this once .*store it now/m);

    const got = await cli(["get", id], env);
    expect(got.code).toBe(0);
    expect(got.out).toMatch(/^ {2}commands +0 of 10 used, 10 left$/m);
    expect(got.out).toMatch(/^ {2}expires +in 59m \(\d{4}-\d\d-\d\dT[\d:]+Z\)$/m);
    expect(got.out).toMatch(/^ {2}prohibited +rm -rf$/m);
    expect(got.out).not.toContain(secret);

    const listed = await cli(["list"], env);
    expect(listed.code).toBe(0);
    const [header, ...rows] = listed.out.trimEnd().split("\n");
    const row = rows.find((r) => r.startsWith(id))!;
    expect(row).toMatch(/^del_\S+ +ACTIVE +claude-code +CAP_READ +0\/10 +in 59m +did:web:example\.com\/user\/alice$/);
    // Aligned: every column starts where its header does.
    for (const [col, cell] of [["STATE", "ACTIVE"], ["COMMANDS", "0/10"], ["EXPIRES", "in 59m"], ["DELEGATOR", ALICE]] as const) {
      expect(row.indexOf(cell), col).toBe(header!.indexOf(col));
    }
    expect(rows.at(-1)).toMatch(/^\d+ of \d+ active delegations?$/);

    const allowed = await cli(["authorize", id, "git", "status"], env);
    expect([allowed.code, allowed.out]).toEqual([0, "ALLOW  allowed; 9 command(s) left\n"]);
    const denied = await cli(["authorize", id, "--", "sudo", "rm", "-rf", "/"], env);
    expect([denied.code, denied.out]).toEqual([3, 'DENY  prohibited_command (matched "rm -rf")\n']);
    const held = await cli(["authorize", id, "--", "psql", "-c", "DROP TABLE t"], env);
    expect(held.code).toBe(4);
    const ceremony = held.out.match(CER)![1]!;
    expect(held.out).toBe(`CEREMONY_REQUIRED  ceremony_required (matched "drop"); ceremony ${ceremony}\n`);
    expect(held.err).toContain(`llm-broker ceremony approve ${ceremony}`);
    expect(held.err).toContain(`llm-broker authorize --ceremony-id ${ceremony} ${id} -- psql -c 'DROP TABLE t'`);

    const pending = await cli(["ceremony", "list", "--delegation", id], env);
    expect(pending.out).toMatch(new RegExp(`^${ceremony} +PENDING +${id} +in [45]m +psql -c DROP TABLE t$`, "m"));
    const approved = await cli(["ceremony", "approve", ceremony, "--reason", "reviewed"], env);
    expect([approved.code, approved.out]).toEqual([0, `${ceremony}  APPROVED  ${id}  "psql -c DROP TABLE t"\n`]);
    const used = await cli(["authorize", "--ceremony-id", ceremony, id, "--", "psql", "-c", "DROP TABLE t"], env);
    expect([used.code, used.out]).toEqual([0, `ALLOW  allowed; 8 command(s) left; used ceremony ${ceremony}\n`]);

    const revoked = await cli(["revoke", id, "--reason", "done"], env);
    expect([revoked.code, revoked.out]).toEqual([0, `revoked ${id}  REVOKED  manual_revocation: done\n`]);
    const after = await t.connect.getDelegation({ delegationId: id }, { headers: as(ALICE) });
    expect(after.delegation?.state).toBe(DelegationState.REVOKED);
    const again = await cli(["authorize", id, "git", "status"], env);
    expect([again.code, again.out]).toEqual([3, "DENY  delegation_revoked\n"]);
  });

  it("--json prints one document that parses; list --all follows every page; an error is a JSON object on stderr; revoke-context as admin", async () => {
    for (let i = 0; i < 3; i++) await t.connect.createDelegation({ delegatorAcId: "ac-alice-1", scope: {} }, { headers: as(ALICE) });
    const bobs = (await t.connect.createDelegation({ delegatorAcId: "ac-bob-1", scope: {} }, { headers: as(BOB) })).delegation!.delegationId;
    const made = await cli(["delegate", "--ac", "ac-alice-1", "--no-ceremonies", "--json"], env);
    const [listed, missing, context] = await Promise.all([
      cli(["list", "--all", "--page-size", "1", "--json"], env),
      cli(["get", "del_00000000000000000000000000", "--json"], env),
      // Without --as, dev mode's caller is the local operator, an admin.
      cli(["revoke-context", "ac-bob-1", "--reason", "GSAP revoked it"], { LLM_BROKER_ADDR: env.LLM_BROKER_ADDR! }),
    ]);
    expect([context.code, context.out]).toEqual([0, `revoked 1 delegation(s) made from ac-bob-1:\n  ${bobs}\n`]);
    expect(made.code).toBe(0);
    const created = JSON.parse(made.out) as { delegation: { state: string; ceremonyRequiredFor: string[] }; agentCredential: { clientSecret: string } };
    expect(created.delegation).toMatchObject({ state: "DELEGATION_STATE_ACTIVE", ceremonyRequiredFor: [] });
    expect(created.agentCredential.clientSecret).not.toBe("");

    expect(listed.code).toBe(0);
    const page = JSON.parse(listed.out) as { delegations: { delegationId: string }[]; totalSize: number; nextPageToken: string };
    expect(page.totalSize).toBeGreaterThanOrEqual(3);
    expect(page.delegations).toHaveLength(page.totalSize);
    expect(new Set(page.delegations.map((d) => d.delegationId)).size).toBe(page.totalSize);
    expect(page.nextPageToken).toBe("");

    expect(missing.code).toBe(1);
    expect(missing.out).toBe("");
    const sent = await t.connect.getDelegation({ delegationId: "del_00000000000000000000000000" }, { headers: as(ALICE) }).catch((e: unknown) => ConnectError.from(e));
    expect(JSON.parse(missing.err)).toEqual({ error: { code: "NOT_FOUND", reason: "DELEGATION_NOT_FOUND", message: (sent as ConnectError).rawMessage } });

    const auth = await cli(["authorize", JSON.parse(made.out).delegation.delegationId, "--json", "--", "rm", "-rf", "x"], env);
    expect(auth.code).toBe(0); // no ceremonies, nothing prohibited
    expect(JSON.parse(auth.out)).toMatchObject({ decision: "COMMAND_DECISION_ALLOW", reason: "allowed" });
  });

  it("usage errors exit 2 naming the option or value, before connecting", async () => {
    const nowhere = { ...env, LLM_BROKER_ADDR: "127.0.0.1:1" };
    const [unknown, ttl, state, dashed, missing, both] = await Promise.all([
      cli(["list", "--frobnicate"], nowhere),
      cli(["delegate", "--ac", "ac-alice-1", "--ttl", "soon"], nowhere),
      cli(["list", "--state", "zombie"], nowhere),
      cli(["authorize", "del_00000000000000000000000000", "psql", "-c", "select 1"], nowhere),
      cli(["get"], nowhere),
      cli(["list", "--cert", "client.pem"], nowhere),
    ]);
    for (const r of [unknown, ttl, state, dashed, missing, both]) {
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
    }
    expect(unknown.err).toMatch(/^error: unknown option '--frobnicate'\n\(see: llm-broker list --help\)\n$/);
    expect(ttl.err).toContain("error: option '--ttl <duration>' argument 'soon' is invalid. expected a duration with a unit");
    expect(state.err).toContain("argument 'zombie' is invalid. Allowed choices are requested, active, expired, revoked, failed");
    expect(dashed.err).toMatch(/^error: unknown option '-c'\n\(a command with options of its own goes after --/);
    expect(missing.err).toContain("error: missing required argument 'delegation_id'");
    expect(both.err).toContain("error: --cert needs --key (LLM_BROKER_KEY)");
  });

  it("a broker that is not there is one line and exit 1; the broker's message is printed as sent; a token never", async () => {
    const token = "eyJ-a-bearer-token-that-must-never-be-printed";
    const closed = await freePort();
    const [refused, notFound] = await Promise.all([
      cli(["list", "--addr", `127.0.0.1:${closed}`, "--token", token]),
      cli(["revoke", "del_00000000000000000000000000"], { ...env, LLM_BROKER_TOKEN: token }),
    ]);
    expect(refused.code).toBe(1);
    expect(refused.out).toBe("");
    expect(refused.err).toBe(`error: cannot reach the broker at 127.0.0.1:${closed} (ECONNREFUSED); is it running there? (--addr, LLM_BROKER_ADDR)\n`);
    const sent = await t.connect.revokeDelegation({ delegationId: "del_00000000000000000000000000" }, { headers: as(ALICE) }).catch((e: unknown) => ConnectError.from(e));
    expect(notFound.code).toBe(1);
    expect(notFound.err).toBe(`error: NOT_FOUND: ${(sent as ConnectError).rawMessage}\n`);
    for (const r of [refused, notFound]) expect(r.out + r.err).not.toContain(token);
  });
});
