/**
 * Prototype databases for the migration tests, built the way the prototype
 * built them, and its Keycloak clients, registered the way keycloak.py did.
 *
 * The seeds hold no CREATE TABLE text: the prototype created its table with
 * `SQLModel.metadata.create_all` from `DelegationDB` (llm_broker/db.py).
 * PROTOTYPE_DDL is what SQLAlchemy 2 emits for that model on SQLite: `str`
 * → VARCHAR, `int` → INTEGER, `datetime` → DATETIME; NOT NULL unless the
 * annotation is Optional; `index=True` on status → ix_delegations_status.
 */
import Database from "better-sqlite3";
import type { KeycloakFake } from "../fakes/keycloak-fake.js";

export const PROTOTYPE_DDL = [
  `CREATE TABLE delegations (
	delegation_id VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	agent_type VARCHAR NOT NULL, 
	agent_model VARCHAR, 
	agent_did VARCHAR NOT NULL, 
	agent_keycloak_client_id VARCHAR, 
	delegator_did VARCHAR NOT NULL, 
	delegator_ac_id VARCHAR NOT NULL, 
	delegated_ac_id VARCHAR, 
	capability_ceiling VARCHAR NOT NULL, 
	ceremony_required_for VARCHAR NOT NULL, 
	max_commands INTEGER NOT NULL, 
	commands_executed INTEGER NOT NULL, 
	created_at DATETIME NOT NULL, 
	expires_at DATETIME NOT NULL, 
	revoked_at DATETIME, 
	revoke_reason VARCHAR, 
	chronicle_cid VARCHAR, 
	PRIMARY KEY (delegation_id)
)`,
  `CREATE INDEX ix_delegations_status ON delegations (status)`,
];

/** One row as the prototype wrote it (DelegationDB's columns). */
export interface PrototypeRowValues {
  delegation_id: string;
  status: string;
  agent_type: string;
  agent_model: string | null;
  agent_did: string;
  agent_keycloak_client_id: string | null;
  delegator_did: string;
  delegator_ac_id: string;
  delegated_ac_id: string | null;
  capability_ceiling: string;
  ceremony_required_for: string;
  max_commands: number | string;
  commands_executed: number;
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
  revoke_reason: string | null;
  chronicle_cid: string | null;
}

const MINUTE = 60_000;

/** SQLAlchemy's SQLite DATETIME text of a naive UTC datetime: "2026-04-04 16:52:45.123456". */
export function sqlalchemyTime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}.${p(d.getUTCMilliseconds(), 3)}000`;
}

/**
 * A row as DelegationManager.create_delegation made it (agent DID and
 * Keycloak clientId derived from the id, the dev-mode GSAP context id),
 * created `ageMin` minutes before `now` with a TTL of `ttlMin`.
 */
export function prototypeRow(
  id: string,
  now: number,
  o: { ageMin?: number; ttlMin?: number; agentType?: string; delegator?: string; delegatorAcId?: string } & Partial<PrototypeRowValues> = {},
): PrototypeRowValues {
  const agentType = o.agentType ?? "claude-code";
  const created = now - (o.ageMin ?? 10) * MINUTE;
  const { ageMin: _a, ttlMin: _t, agentType: _at, delegator: _d, delegatorAcId: _ac, ...values } = o;
  return {
    delegation_id: id,
    status: "active",
    agent_type: agentType,
    agent_model: "claude-opus-4-6",
    agent_did: `did:web:guildhouse.dev/agent/${agentType}-${id}`,
    agent_keycloak_client_id: `agent-${agentType}-${id}`,
    delegator_did: o.delegator ?? "did:web:guildhouse.dev/user/alice",
    delegator_ac_id: o.delegatorAcId ?? "ac-alice-1",
    delegated_ac_id: `ac-dev-${id}`,
    capability_ceiling: "CAP_MUTATE",
    ceremony_required_for: "delete,destroy,drop",
    max_commands: 500,
    commands_executed: 0,
    created_at: sqlalchemyTime(created),
    expires_at: sqlalchemyTime(created + (o.ttlMin ?? 60) * MINUTE),
    revoked_at: null,
    revoke_reason: null,
    chronicle_cid: `sha256:${"ab".repeat(32)}`,
    ...values,
  };
}

/** Writes a prototype database at `path` holding `rows`. */
export function writePrototypeDb(path: string, rows: PrototypeRowValues[]): void {
  const db = new Database(path);
  try {
    for (const ddl of PROTOTYPE_DDL) db.exec(ddl);
    const cols = Object.keys(rows[0] ?? prototypeRow("del-00000000", 0));
    const insert = db.prepare(`INSERT INTO delegations (${cols.join(", ")}) VALUES (${cols.map((c) => `@${c}`).join(", ")})`);
    for (const r of rows) insert.run(r);
  } finally {
    db.close();
  }
}

/**
 * Registers a client in the fake exactly as the prototype's keycloak.py did:
 * a client_credentials admin token, POST .../clients with its
 * representation (no llm_broker_governed attribute), then GET the secret.
 * Returns the client's secret, so a test can check it is never printed.
 */
export async function registerLikePrototype(fake: KeycloakFake, row: PrototypeRowValues): Promise<string> {
  const tokenRes = await fetch(`${fake.url}/realms/${fake.realm}/protocol/openid-connect/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: fake.adminClientId, client_secret: fake.adminClientSecret }).toString(),
  });
  const { access_token } = (await tokenRes.json()) as { access_token: string };
  const headers = { authorization: `Bearer ${access_token}`, "content-type": "application/json" };
  const delegatorShort = row.delegator_did.split("/").pop();
  const created = await fetch(`${fake.url}/admin/realms/${fake.realm}/clients`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      clientId: row.agent_keycloak_client_id,
      name: `${row.agent_type} (delegated by ${delegatorShort})`,
      enabled: true,
      serviceAccountsEnabled: true,
      directAccessGrantsEnabled: false,
      publicClient: false,
      protocol: "openid-connect",
      attributes: { agent_type: row.agent_type, delegator_did: row.delegator_did, delegation_id: row.delegation_id },
    }),
  });
  if (created.status !== 201) throw new Error(`fake keycloak answered ${created.status}`);
  const uuid = created.headers.get("location")!.split("/").pop()!;
  const secret = await fetch(`${fake.url}/admin/realms/${fake.realm}/clients/${uuid}/client-secret`, { headers });
  return ((await secret.json()) as { value: string }).value;
}

/** The ids of the shared scenario, by what each row is. */
export const IDS = {
  /** active, 12 of 500 commands, 50 minutes left; its identity exists. */
  live: "del-a1000001",
  /** active in the prototype, but expired 5 minutes ago (the 30 s sweep never ran). */
  pastExpiry: "del-b2000002",
  /** active, but its agent identity is gone from the IdP. */
  identityGone: "del-c3000003",
  /** revoked an hour ago, before its expiry. */
  revoked: "del-d4000004",
  /** expired with its budget spent. */
  expired: "del-e5000005",
  /** active, with values this broker refuses. */
  invalid: "del-f6000006",
  /** active, budget spent (500 of 500) but before its expiry. */
  budgetSpent: "del-0a700007",
  /** active, made by the live delegation's agent from its delegated context; identity exists. */
  child: "del-0b800008",
  /** active, made from the revoked delegation's delegated context. */
  orphan: "del-0c900009",
} as const;

/**
 * The scenario's rows, relative to `now`. `registrar` is the prototype's
 * registrar that made them: keycloak (client `agent-<type>-<id>`) or its stub
 * (`stub-agent-<type>-<id>`, registrar_stub.py).
 */
export function scenarioRows(now: number, registrar: "keycloak" | "stub" = "keycloak"): PrototypeRowValues[] {
  const rows = [
    prototypeRow(IDS.live, now, { ageMin: 10, ttlMin: 60, commands_executed: 12 }),
    prototypeRow(IDS.pastExpiry, now, { ageMin: 65, ttlMin: 60, commands_executed: 3 }),
    prototypeRow(IDS.identityGone, now, { ageMin: 20, ttlMin: 120, capability_ceiling: "CAP_READ", ceremony_required_for: "" }),
    prototypeRow(IDS.revoked, now, {
      ageMin: 90,
      ttlMin: 240,
      status: "revoked",
      revoked_at: sqlalchemyTime(now - 60 * MINUTE),
      revoke_reason: "manual_revocation",
    }),
    prototypeRow(IDS.expired, now, {
      ageMin: 300,
      ttlMin: 60,
      status: "expired",
      commands_executed: 500,
      revoked_at: sqlalchemyTime(now - 250 * MINUTE),
      revoke_reason: "command_limit",
    }),
    prototypeRow(IDS.invalid, now, { ageMin: 5, agentType: "Claude Code", capability_ceiling: "CAP_ROOT", max_commands: "lots" }),
    prototypeRow(IDS.budgetSpent, now, { ageMin: 15, commands_executed: 500 }),
    prototypeRow(IDS.child, now, {
      ageMin: 8,
      ttlMin: 30,
      delegator: `did:web:guildhouse.dev/agent/claude-code-${IDS.live}`,
      delegatorAcId: `ac-dev-${IDS.live}`,
      max_commands: 50,
    }),
    prototypeRow(IDS.orphan, now, { ageMin: 70, ttlMin: 300, delegatorAcId: `ac-dev-${IDS.revoked}` }),
  ];
  if (registrar === "stub") for (const r of rows) r.agent_keycloak_client_id = `stub-${r.agent_keycloak_client_id}`;
  return rows;
}

/** Epoch ms of a sqlalchemyTime string (independently of the importer's parser). */
export function parseTimeOf(text: string): number {
  return Date.parse(`${text.replace(" ", "T").slice(0, 23)}Z`);
}
