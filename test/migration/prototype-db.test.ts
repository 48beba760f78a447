/**
 * Reading the prototype's file: a file that is not the prototype's database
 * is refused with what is missing; the file is opened read-only; timestamps
 * are the prototype's naive UTC; each live row is held to this broker's
 * rules, every problem named.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { PrototypeFileError, readPrototype } from "../../src/migration/index.js";
import { parsePrototypeTime } from "../../src/migration/prototype-db.js";
import { readRow } from "../../src/migration/prototype-row.js";
import { migrate } from "../../src/store/migrate.js";
import { prototypeRow, writePrototypeDb } from "./prototype-fixture.js";

const dir = mkdtempSync(join(tmpdir(), "lpb-proto-db-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const ORDER = ["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"];

describe("readPrototype", () => {
  it("refuses a missing file, a file that is not SQLite, and a database without the prototype's table", () => {
    expect(() => readPrototype(join(dir, "nope.db"))).toThrow(/nope\.db: no such file/);
    const text = join(dir, "notes.txt");
    writeFileSync(text, "this is not a database, it is a list of chores\n".repeat(100));
    expect(() => readPrototype(text)).toThrow(/is not a SQLite database/);
    const other = join(dir, "other.db");
    new Database(other).exec("CREATE TABLE users (id TEXT)").close();
    expect(() => readPrototype(other)).toThrow(PrototypeFileError);
    expect(() => readPrototype(other)).toThrow(/is not a prototype database: it has no "delegations" table \(its tables: users\)/);
  });

  it("names the missing columns, and recognises this broker's own database", async () => {
    const partial = join(dir, "partial.db");
    new Database(partial).exec("CREATE TABLE delegations (delegation_id VARCHAR, status VARCHAR)").close();
    expect(() => readPrototype(partial)).toThrow(/"delegations" table lacks the columns agent_type, agent_model, .*revoke_reason$/);
    const broker = join(dir, "broker.db");
    await migrate(`file:${broker}`);
    expect(() => readPrototype(broker)).toThrow(/lacks the columns delegation_id, status, .*; it looks like this broker's own database/);
  });

  it("reads every row without writing to the file", () => {
    const path = join(dir, "proto.db");
    const now = Date.now();
    writePrototypeDb(path, [prototypeRow("del-00000001", now), prototypeRow("del-00000002", now, { status: "revoked" })]);
    const before = readFileSync(path);
    const mtime = statSync(path).mtimeMs;
    const rows = readPrototype(path);
    expect(rows.map((r) => r.delegation_id).sort()).toEqual(["del-00000001", "del-00000002"]);
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(statSync(path).mtimeMs).toBe(mtime);
  });
});

describe("parsePrototypeTime", () => {
  it("reads SQLAlchemy's naive UTC DATETIME text, and ISO variants", () => {
    const t = Date.UTC(2026, 3, 4, 16, 52, 45, 123);
    expect(parsePrototypeTime("2026-04-04 16:52:45.123456")).toBe(t);
    expect(parsePrototypeTime("2026-04-04T16:52:45.123")).toBe(t);
    expect(parsePrototypeTime("2026-04-04 16:52:45")).toBe(t - 123);
    expect(parsePrototypeTime("2026-04-04T18:52:45.123+02:00")).toBe(t);
    expect(parsePrototypeTime("2026-04-04T16:52:45.123Z")).toBe(t);
  });

  it("refuses what is not a timestamp", () => {
    for (const v of ["", "yesterday", "2026-02-31 00:00:00", "2026-04-04 24:00:00", "1775321565", 1775321565, null]) {
      expect(parsePrototypeTime(v)).toBeUndefined();
    }
  });
});

describe("readRow", () => {
  const now = Date.now();

  it("keeps a live row's values, splitting the comma-joined ceremony list and dropping duplicates by words", () => {
    const row = readRow(prototypeRow("del-1234abcd", now, { ceremony_required_for: "delete, DROP,drop ,rm -rf,", agent_model: null, delegated_ac_id: null }), ORDER);
    expect(row).toMatchObject({ kind: "live", id: "del-1234abcd", ceremonyRequiredFor: ["delete", "DROP", "rm -rf"], agentModel: "", delegatedAcId: "" });
  });

  it("accepts an id of this broker's own form", () => {
    expect(readRow(prototypeRow("del_01JD3ZK7V9Q4M2N8P6R5T3W1XY", now), ORDER).kind).toBe("live");
  });

  it("names every problem of an invalid row", () => {
    const row = readRow(
      prototypeRow("DEL 1", now, {
        agent_did: "agent-1",
        delegator_ac_id: "",
        capability_ceiling: "CAP_GOD",
        ceremony_required_for: "delete,--",
        commands_executed: -1,
        expires_at: "2020-01-01 00:00:00.000000",
        agent_model: "claude\u001b[31m",
      }),
      ORDER,
    );
    expect(row.kind).toBe("invalid");
    const problems = row.kind === "invalid" ? row.problems.join("\n") : "";
    for (const field of ["delegation_id", "agent_model", "agent_did", "delegator_ac_id", "capability_ceiling", "ceremony_required_for[1]", "commands_executed", "expires_at"]) {
      expect(problems).toContain(field);
    }
  });

  it("reads an ended row only for its report", () => {
    const row = readRow(prototypeRow("del-0000dead", now, { status: "expired", capability_ceiling: "whatever", revoke_reason: "ttl_elapsed", revoked_at: "2026-04-04 16:52:45.000000" }), ORDER);
    expect(row).toMatchObject({ kind: "ended", status: "expired", reason: "ttl_elapsed", endTime: Date.UTC(2026, 3, 4, 16, 52, 45) });
  });
});
