/**
 * What `serve` prints once it listens: where, with what, and a first call to
 * try with this command line and with plain curl, in the form the
 * authentication mode accepts.
 */
import type { Settings } from "../config/settings.js";
import { redactDatabaseUrl } from "../config/redact.js";

export interface BannerFacts {
  grpcPort: number;
  webPort: number;
  driver: string;
  drivers: { registrar: string; gsap: string; audit: string };
}

const ALICE = "did:web:example.com/user/alice";

/** The first calls to try, with the CLI and with curl. */
function tryIt(mode: string, grpcAddr: string, web: string): string {
  const create = `${web}/llmbroker.v1.DelegationService/CreateDelegation`;
  const body = `'{"delegatorAcId":"ac-alice-1","scope":{"capabilityCeiling":"CAP_READ","maxCommands":10}}'`;
  const cli = (env: string) => `
Try it with the command line (npx llm-broker --help lists every verb):
  export ${env}
  npx llm-broker delegate --ac ac-alice-1 --ceiling CAP_READ --max-commands 10
  npx llm-broker list
  npx llm-broker authorize <delegation_id> git status
`;
  if (mode === "dev") {
    return `${cli(`LLM_BROKER_ADDR=${grpcAddr} LLM_BROKER_AS=${ALICE}`)}
Or with plain curl (Connect protocol):
  curl -s ${create} \\
    -H 'content-type: application/json' -H 'x-delegator-did: ${ALICE}' \\
    -d ${body}
`;
  }
  if (mode === "jwt") {
    return `${cli(`LLM_BROKER_ADDR=${grpcAddr} LLM_BROKER_TOKEN="$TOKEN"   # an access token from your issuer, with your DID claim`)}
Or with plain curl:
  curl -s ${create} \\
    -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \\
    -d ${body}
`;
  }
  return `${cli(`LLM_BROKER_ADDR=https://${grpcAddr} LLM_BROKER_CERT=client.pem LLM_BROKER_KEY=client-key.pem LLM_BROKER_CA=server-ca.pem`)}
Or with plain curl, with a client certificate issued by AUTH_TLS_CLIENT_CA_FILE:
  curl -s --cacert server-ca.pem --cert client.pem --key client-key.pem ${create} \\
    -H 'content-type: application/json' -d ${body}
`;
}

/** The banner. */
export function banner(settings: Settings, b: BannerFacts): string {
  const host = settings.host.includes(":") ? `[${settings.host}]` : settings.host;
  const tls = settings.authMode === "mtls";
  const web = `${tls ? "https" : "http"}://${host}:${b.webPort}`;
  return `
LLM Principal Broker is running
  gRPC (${tls ? "TLS" : "h2c"})               ${host}:${b.grpcPort}
  Connect + gRPC-Web       ${web}
${settings.dashboardEnabled ? `  dashboard                ${web}/\n` : ""}  health                   ${web}/readyz  ${web}/livez  grpc.health.v1 on the gRPC port
  database                 ${redactDatabaseUrl(settings.databaseUrl)} (${b.driver})
  registrar / GSAP / audit ${b.drivers.registrar} / ${b.drivers.gsap} / ${b.drivers.audit}${settings.auditFailClosed ? " (fail-closed)" : ""}
  authentication           ${settings.authMode}
${tryIt(settings.authMode, `${host}:${b.grpcPort}`, web)}`;
}
