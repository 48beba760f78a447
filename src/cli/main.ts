#!/usr/bin/env node
/**
 * The broker's command line.
 *   serve     start the broker (migrates first)
 *   migrate   apply pending SQL migrations and exit
 */
import { startBroker } from "../app.js";
import { redactDatabaseUrl, redactSecrets } from "../config/redact.js";
import { SettingsError, loadSettings } from "../config/settings.js";
import { settingsWarnings } from "../config/warnings.js";
import { migrate } from "../store/migrate.js";

const USAGE = `usage: llm-broker <command>

commands:
  serve     start the broker (applies migrations first)
  migrate   apply pending migrations to DATABASE_URL and exit
  migrate-prototype <prototype.db>
            import the Python prototype's delegations into DATABASE_URL

Configuration comes from the environment; see .env.example.`;

/** A first call to try, in the form the authentication mode accepts. */
function tryIt(mode: string, web: string): string {
  const create = `${web}/llmbroker.v1.DelegationService/CreateDelegation`;
  const body = `'{"delegatorAcId":"ac-alice-1","scope":{"capabilityCeiling":"CAP_READ","maxCommands":10}}'`;
  if (mode === "dev") {
    return `
Try it (Connect protocol, plain curl):
  curl -s ${create} \\
    -H 'content-type: application/json' -H 'x-delegator-did: did:web:example.com/user/alice' \\
    -d ${body}
`;
  }
  if (mode === "jwt") {
    return `
Try it with an access token from your issuer (it must carry your DID claim):
  curl -s ${create} \\
    -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \\
    -d ${body}
`;
  }
  return `
Try it with a client certificate issued by AUTH_TLS_CLIENT_CA_FILE:
  curl -s --cacert server-ca.pem --cert client.pem --key client-key.pem ${create} \\
    -H 'content-type: application/json' -d ${body}
`;
}

async function main(argv: string[]): Promise<number> {
  const command = argv[0] ?? "serve";
  if (command === "help" || command === "--help" || command === "-h") {
    console.log(USAGE);
    return 0;
  }
  const settings = loadSettings();
  switch (command) {
    case "migrate": {
      const r = await migrate(settings.databaseUrl);
      console.log(
        r.applied.length > 0 ? `applied: ${r.applied.join(", ")}` : `up to date (${r.alreadyApplied.length} migrations)`,
      );
      return 0;
    }
    case "serve": {
      for (const warning of settingsWarnings(settings)) console.error(`warning: ${warning}`);
      const broker = await startBroker(settings);
      const host = settings.host.includes(":") ? `[${settings.host}]` : settings.host;
      const tls = settings.authMode === "mtls";
      const web = `${tls ? "https" : "http"}://${host}:${broker.webPort}`;
      console.log(`
LLM Principal Broker is running
  gRPC (${tls ? "TLS" : "h2c"})               ${host}:${broker.grpcPort}
  Connect + gRPC-Web       ${web}
  health                   ${web}/healthz
  database                 ${redactDatabaseUrl(settings.databaseUrl)} (${broker.store.driver})
  registrar / GSAP / audit ${broker.drivers.registrar} / ${broker.drivers.gsap} / ${broker.drivers.audit}${settings.auditFailClosed ? " (fail-closed)" : ""}
  authentication           ${settings.authMode}
${tryIt(settings.authMode, web)}`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      await broker.stop();
      return 0;
    }
    case "migrate-prototype": {
      const { migratePrototype } = await import("./migrate-prototype.js");
      return migratePrototype(argv.slice(1), settings);
    }
    default:
      console.error(`unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // Messages name variables, not secret values; redactSecrets is the guard if one ever slips in.
    if (err instanceof SettingsError) console.error(`configuration error: ${redactSecrets(err.message, process.env)}`);
    else console.error(err);
    process.exit(1);
  },
);
