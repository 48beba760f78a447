/**
 * The client verbs against a broker with AUTH_MODE=mtls: the client
 * certificate, its key and the CA come from LLM_BROKER_CERT, LLM_BROKER_KEY
 * and LLM_BROKER_CA (TLS is implied), the caller is the certificate's DID;
 * without a certificate the broker refuses the handshake, which is one line
 * and exit 1. The PKI is made with the openssl CLI at test time.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, type TestBroker, startTestBroker } from "../helpers/broker.js";
import { cli } from "./cli-process.js";

const openssl = (args: string[]) => promisify(execFile)("openssl", args);
const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"];

let dir: string;
let t: TestBroker;

/** A leaf certificate signed by the test CA. */
async function leaf(name: string, cn: string, exts: string[]): Promise<void> {
  await openssl([
    "req", "-x509", ...EC, "-keyout", join(dir, `${name}.key`), "-out", join(dir, `${name}.pem`), "-subj", `/CN=${cn}`,
    "-CA", join(dir, "ca.pem"), "-CAkey", join(dir, "ca.key"), "-addext", "basicConstraints=critical,CA:FALSE",
    ...exts.flatMap((e) => ["-addext", e]),
  ]);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "lpb-cli-mtls-"));
  await openssl(["req", "-x509", ...EC, "-keyout", join(dir, "ca.key"), "-out", join(dir, "ca.pem"), "-subj", "/CN=CLI Test CA"]);
  await Promise.all([
    leaf("server", "localhost", ["subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth"]),
    leaf("alice", "alice", ["extendedKeyUsage=clientAuth", `subjectAltName=URI:${ALICE}`]),
  ]);
  t = await startTestBroker({
    env: {
      AUTH_MODE: "mtls",
      AUTH_TLS_CERT_FILE: join(dir, "server.pem"),
      AUTH_TLS_KEY_FILE: join(dir, "server.key"),
      AUTH_TLS_CLIENT_CA_FILE: join(dir, "ca.pem"),
      ALLOW_DEV_DRIVERS: "true",
    },
  });
});
afterAll(async () => {
  await t?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("llm-broker client verbs over mTLS", { timeout: 60_000 }, () => {
  it("present the certificate from the environment, and fail in one line without one", async () => {
    const addr = `127.0.0.1:${t.broker.grpcPort}`;
    const certs = { LLM_BROKER_CERT: join(dir, "alice.pem"), LLM_BROKER_KEY: join(dir, "alice.key"), LLM_BROKER_CA: join(dir, "ca.pem") };
    const [made, anonymous] = await Promise.all([
      cli(["delegate", "--ac", "ac-alice-1", "--json"], { LLM_BROKER_ADDR: addr, ...certs }),
      cli(["list"], { LLM_BROKER_ADDR: `https://${addr}`, LLM_BROKER_CA: certs.LLM_BROKER_CA }),
    ]);
    expect(made.code).toBe(0);
    expect(JSON.parse(made.out)).toMatchObject({ delegation: { delegatorDid: ALICE, state: "DELEGATION_STATE_ACTIVE" } });

    const listed = await cli(["list", "--addr", `https://${addr}`, "--cert", certs.LLM_BROKER_CERT, "--key", certs.LLM_BROKER_KEY, "--ca", certs.LLM_BROKER_CA]);
    expect(listed.code).toBe(0);
    expect(listed.out).toContain(JSON.parse(made.out).delegation.delegationId);

    expect(anonymous.code).toBe(1);
    expect(anonymous.out).toBe("");
    expect(anonymous.err).toBe(`error: the broker at https://${addr} requires a client certificate: pass --cert and --key (LLM_BROKER_CERT, LLM_BROKER_KEY)\n`);
  });
});
