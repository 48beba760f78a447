/**
 * `llm-broker migrate-prototype` as an operator runs it, in its own process:
 * the JSON report and the human summary, a second run that imports nothing
 * twice, a dry run that writes nothing (not even the database file), the
 * exit codes (1 for a file that is not a prototype database, with what is
 * missing; 2 for usage), and no secret in anything it prints, against the
 * Keycloak fake.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStore } from "../../src/store/open-store.js";
import { KeycloakFake } from "../fakes/keycloak-fake.js";
import { IDS, registerLikePrototype, scenarioRows, writePrototypeDb } from "./prototype-fixture.js";

const MAIN = join(process.cwd(), "src", "cli", "main.ts");
const dir = mkdtempSync(join(tmpdir(), "lpb-mp-cli-"));
const stubProto = join(dir, "stub-proto.db");

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, "migrate-prototype", ...args], {
    env: { ...process.env, LOG_LEVEL: "silent", AGENT_REGISTRAR: "stub", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  return new Promise((resolve) => child.on("exit", (code) => resolve({ code, out, err })));
}

interface JsonReport {
  dry_run: boolean;
  identity_check: string;
  counts: Record<string, number>;
  delegations: { delegation_id: string; outcome: string; state: string; reason: string; detail: string }[];
  warnings: string[];
}

beforeAll(() => writePrototypeDb(stubProto, scenarioRows(Date.now(), "stub")));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Each case starts one or more processes of the broker's CLI (about 2 s each on two cores).
describe("llm-broker migrate-prototype", { timeout: 90_000 }, () => {
  it("imports and prints a JSON report; a second run imports nothing twice", async () => {
    const env = { DATABASE_URL: `file:${join(dir, "json.db")}` };
    const first = await run([stubProto, "--json"], env);
    expect(first.code).toBe(0);
    const report = JSON.parse(first.out) as JsonReport;
    expect(report.dry_run).toBe(false);
    // The stub cannot tell whether an identity exists: nothing is revoked for that, and it says so.
    expect(report.identity_check).toBe("");
    expect(report.warnings[0]).toMatch(/identities were not checked/);
    expect(report.counts).toEqual({
      imported_active: 3,
      imported_revoked_identity_missing: 0,
      imported_ended: 3,
      skipped_ended: 2,
      skipped_existing: 0,
      skipped_invalid: 1,
    });
    expect(report.delegations.find((d) => d.delegation_id === IDS.live)).toMatchObject({ outcome: "imported_active", state: "ACTIVE" });
    expect(report.delegations.find((d) => d.delegation_id === IDS.pastExpiry)).toMatchObject({ state: "EXPIRED", reason: "ttl_elapsed" });
    expect(report.delegations.find((d) => d.delegation_id === IDS.invalid)?.detail).toContain("capability_ceiling");

    const second = await run([stubProto, "--json"], env);
    expect(second.code).toBe(0);
    const again = JSON.parse(second.out) as JsonReport;
    expect(again.counts).toMatchObject({ imported_active: 0, imported_ended: 0, skipped_existing: 6, skipped_ended: 2, skipped_invalid: 1 });
  });

  it("prints a human summary with the counts and every delegation", async () => {
    const r = await run([stubProto], { DATABASE_URL: `file:${join(dir, "human.db")}` });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/imported, ACTIVE\s+3\n/);
    expect(r.out).toMatch(/imported, then ended \(expired, budget spent, parent ended\)\s+3\n/);
    expect(r.out).toMatch(/skipped: invalid\s+1\n/);
    expect(r.out).toMatch(new RegExp(`${IDS.orphan}\\s+imported → REVOKED \\(parent_delegation_ended\\)`));
    expect(r.out).toContain("needs attention:");
  });

  it("a dry run says what it would do and writes nothing, not even the database file", async () => {
    const path = join(dir, "dry.db");
    const r = await run([stubProto, "--dry-run"], { DATABASE_URL: `file:${path}` });
    expect(r.code).toBe(0);
    expect(r.out).toContain("dry run: nothing was written");
    expect(r.out).toMatch(new RegExp(`${IDS.live}\\s+would import → ACTIVE`));
    expect(existsSync(path)).toBe(false);
  });

  it("refuses a file that is not a prototype database, naming what is missing (exit 1), before touching DATABASE_URL", async () => {
    const path = join(dir, "refused.db");
    const notes = join(dir, "notes.txt");
    writeFileSync(notes, "not a database at all\n".repeat(200));
    const text = await run([notes], { DATABASE_URL: `file:${path}` });
    expect(text.code).toBe(1);
    expect(text.err).toContain("is not a SQLite database");
    // This broker's own database, by mistake.
    await run([stubProto], { DATABASE_URL: `file:${join(dir, "json2.db")}` });
    const broker = await run([join(dir, "json2.db")], { DATABASE_URL: `file:${path}` });
    expect(broker.code).toBe(1);
    expect(broker.err).toMatch(/is not a prototype database: its "delegations" table lacks the columns delegation_id, status, .*this broker's own database/);
    const missing = await run([join(dir, "missing.db")], { DATABASE_URL: `file:${path}` });
    expect(missing.code).toBe(1);
    expect(missing.err).toContain("missing.db: no such file");
    expect(existsSync(path)).toBe(false);
  });

  it("answers usage with exit 2: no file, two files, an unknown option", async () => {
    const [none, two, unknown, help] = await Promise.all([run([], {}), run(["a.db", "b.db"], {}), run([stubProto, "--force"], {}), run(["--help"], {})]);
    for (const r of [none, two, unknown]) {
      expect(r.code).toBe(2);
      expect(r.err).toContain("usage: llm-broker migrate-prototype <prototype.db>");
    }
    expect(none.err).toContain("the prototype database file is missing");
    expect(unknown.err).toContain("unknown option --force");
    expect(help.code).toBe(0);
    expect(help.out).toContain("--dry-run");
  });

  describe("with Keycloak", () => {
    let fake: KeycloakFake;
    const kcProto = join(dir, "kc-proto.db");
    const secrets: string[] = [];

    beforeAll(async () => {
      fake = await KeycloakFake.start();
      const rows = scenarioRows(Date.now(), "keycloak");
      writePrototypeDb(kcProto, rows);
      for (const r of rows) if (r.status === "active" && r.delegation_id !== IDS.identityGone && r.delegation_id !== IDS.invalid) secrets.push(await registerLikePrototype(fake, r));
    });
    afterAll(async () => fake?.close());

    it("revokes the delegation whose client is gone, and prints no secret, also in its debug log", async () => {
      const env = {
        DATABASE_URL: `file:${join(dir, "kc.db")}`,
        AGENT_REGISTRAR: "keycloak",
        KEYCLOAK_URL: fake.url,
        KEYCLOAK_REALM: fake.realm,
        KEYCLOAK_ADMIN_CLIENT_ID: fake.adminClientId,
        KEYCLOAK_ADMIN_CLIENT_SECRET: fake.adminClientSecret,
        LOG_LEVEL: "debug",
      };
      const r = await run([kcProto, "--json"], env);
      expect(r.code).toBe(0);
      const report = JSON.parse(r.out) as JsonReport;
      expect(report.identity_check).toBe("keycloak");
      expect(report.counts).toMatchObject({ imported_active: 2, imported_revoked_identity_missing: 1 });
      expect(report.delegations.find((d) => d.delegation_id === IDS.identityGone)).toMatchObject({ state: "REVOKED", reason: "identity_missing" });
      const printed = r.out + r.err;
      for (const s of [fake.adminClientSecret, ...secrets, ...fake.accessTokens()]) expect(printed).not.toContain(s);
    });

    it("fails (exit 1) without importing anything when Keycloak refuses the broker's credentials", async () => {
      const path = join(dir, "kc-bad.db");
      const r = await run([kcProto], {
        DATABASE_URL: `file:${path}`,
        AGENT_REGISTRAR: "keycloak",
        KEYCLOAK_URL: fake.url,
        KEYCLOAK_REALM: fake.realm,
        KEYCLOAK_ADMIN_CLIENT_ID: fake.adminClientId,
        KEYCLOAK_ADMIN_CLIENT_SECRET: "wrong-secret-0123456789",
        HTTP_MAX_RETRIES: "0",
      });
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/could not look up agent identities in keycloak: .*nothing was imported/);
      expect(r.err).not.toContain("wrong-secret-0123456789");
      const store = await openStore(`file:${path}`);
      try {
        expect(await store.headRevision()).toBe(0n);
      } finally {
        await store.close();
      }
    });
  });
});
