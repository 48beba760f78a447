/**
 * AUTH_MODE=mtls through the real listeners: both ports speak TLS and refuse
 * a client without a certificate from the client CA during the handshake;
 * the caller is the certificate (a DID in a URI SAN, else the subject CN),
 * never a header. The PKI is made with the openssl CLI at test time.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { promisify } from "node:util";
import { type DescMethod, type MessageInitShape, type MessageShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { createMtlsAuthenticator, subjectAltNames } from "../../src/server/mtls-authenticator.js";
import type { PeerInfo } from "../../src/server/principal.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { type GrpcError, errorDetailOf } from "../helpers/grpc-client.js";

// ---- PKI --------------------------------------------------------------------

interface Pem {
  key: string;
  cert: string;
}

interface Pki {
  dir: string;
  ca: Pem;
  server: Pem;
  /** CN=gsap-broker, listed in AUTH_MTLS_ADMINS. */
  gsap: Pem;
  /** CN=reporting, a service peer that is not an admin. */
  service: Pem;
  alice: Pem;
  bob: Pem;
  /** CN=gsap-broker from another CA. */
  untrusted: Pem;
  /** CN=gsap-broker from the right CA, expired. */
  expired: Pem;
}

const openssl = (args: string[]) => promisify(execFile)("openssl", args);
const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

async function pem(dir: string, name: string): Promise<Pem> {
  const [key, cert] = await Promise.all([readFile(join(dir, `${name}.key`), "utf8"), readFile(join(dir, `${name}.pem`), "utf8")]);
  return { key, cert };
}

/** A self-signed CA. */
async function makeCa(dir: string, name: string, cn: string): Promise<void> {
  await openssl(["req", "-x509", ...EC, "-keyout", join(dir, `${name}.key`), "-out", join(dir, `${name}.pem`), "-days", "2", "-subj", `/CN=${cn}`]);
}

/** A leaf certificate signed by `ca`, with extra `-addext` values. */
async function makeLeaf(dir: string, ca: string, name: string, cn: string, exts: string[]): Promise<void> {
  await openssl([
    "req", "-x509", ...EC, "-keyout", join(dir, `${name}.key`), "-out", join(dir, `${name}.pem`), "-days", "2",
    "-subj", `/CN=${cn}`, "-CA", join(dir, `${ca}.pem`), "-CAkey", join(dir, `${ca}.key`),
    "-addext", "basicConstraints=critical,CA:FALSE",
    ...exts.flatMap((e) => ["-addext", e]),
  ]);
}

/** A client certificate that expired before it was valid (`-days -1`: notAfter a day before notBefore). */
async function makeExpired(dir: string, ca: string, name: string, cn: string): Promise<void> {
  await openssl(["req", "-new", ...EC, "-keyout", join(dir, `${name}.key`), "-out", join(dir, `${name}.csr`), "-subj", `/CN=${cn}`]);
  await openssl([
    "x509", "-req", "-in", join(dir, `${name}.csr`), "-CA", join(dir, `${ca}.pem`), "-CAkey", join(dir, `${ca}.key`),
    "-days", "-1", "-out", join(dir, `${name}.pem`),
  ]);
}

async function makePki(): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), "mtls-test-"));
  const client = "extendedKeyUsage=clientAuth";
  await Promise.all([makeCa(dir, "ca", "LLM Broker Test CA"), makeCa(dir, "other-ca", "Some Other CA")]);
  await Promise.all([
    makeLeaf(dir, "ca", "server", "localhost", ["subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth"]),
    makeLeaf(dir, "ca", "gsap", "gsap-broker", [client]),
    makeLeaf(dir, "ca", "service", "reporting", [client]),
    makeLeaf(dir, "ca", "alice", "alice", [client, `subjectAltName=DNS:alice.example.com,URI:${ALICE}`]),
    makeLeaf(dir, "ca", "bob", "bob", [client, `subjectAltName=URI:${BOB}`]),
    makeLeaf(dir, "other-ca", "untrusted", "gsap-broker", [client]),
    makeExpired(dir, "ca", "expired", "gsap-broker"),
  ]);
  const names = ["ca", "server", "gsap", "service", "alice", "bob", "untrusted", "expired"] as const;
  const loaded = await Promise.all(names.map((n) => pem(dir, n)));
  return { dir, ...(Object.fromEntries(names.map((n, i) => [n, loaded[i]!])) as Omit<Pki, "dir">) };
}

// ---- clients ----------------------------------------------------------------

type Methods = typeof DelegationService.method;
type Unary = Exclude<keyof Methods, "watchDelegations">;

/** A grpc-js client presenting `id` (or no certificate), trusting the test CA. */
function grpcClient(port: number, ca: string, id?: Pem, credentials?: grpc.ChannelCredentials): grpc.Client {
  const creds =
    credentials ?? grpc.credentials.createSsl(Buffer.from(ca), id ? Buffer.from(id.key) : null, id ? Buffer.from(id.cert) : null);
  return new grpc.Client(`127.0.0.1:${port}`, creds);
}

/** Calls a unary method on the grpc-js client, with optional metadata. */
function unary<K extends Unary>(
  client: grpc.Client,
  name: K,
  request: MessageInitShape<Methods[K]["input"]>,
  headers: Record<string, string> = {},
): Promise<MessageShape<Methods[K]["output"]>> {
  const method = DelegationService.method[name] as DescMethod;
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      `/${DelegationService.typeName}/${method.name}`,
      (m: unknown) => Buffer.from(toBinary(method.input, m as never)),
      (b: Buffer) => fromBinary(method.output, b),
      create(method.input, request as never),
      md,
      { deadline: Date.now() + 10_000 },
      (err, res) => (err ? reject(err) : resolve(res as never)),
    ),
  );
}

/** A Connect (or gRPC-Web) client over HTTPS presenting `id`, trusting the test CA. */
function webClient(port: number, ca: string, id?: Pem, protocol: "connect" | "grpc-web" = "connect"): Client<typeof DelegationService> {
  const options = {
    baseUrl: `https://127.0.0.1:${port}`,
    httpVersion: "1.1" as const,
    nodeOptions: { ca, ...(id ? { key: id.key, cert: id.cert } : {}) },
  };
  return createClient(DelegationService, protocol === "connect" ? createConnectTransport(options) : createGrpcWebTransport(options));
}

/** The error a grpc-js call failed with. */
async function grpcFailure(p: Promise<unknown>): Promise<GrpcError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e as GrpcError,
  );
  if (!err) throw new Error("the call succeeded");
  return err;
}

/** The error a Connect call failed with. */
async function connectFailure(p: Promise<unknown>): Promise<ConnectError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!err) throw new Error("the call succeeded");
  return ConnectError.from(err);
}

/**
 * A Connect call that ended in the transport, with no HTTP answer: the TLS
 * alert itself, or (TLS 1.3 verifies the client after the client has sent its
 * request) the connection reset that follows the refusal. `handshakeEnd`
 * looks at the refusal itself.
 */
function expectTransportRefusal(err: ConnectError): void {
  expect([Code.Unavailable, Code.Internal, Code.Aborted]).toContain(err.code);
  expect((err.cause as NodeJS.ErrnoException | undefined)?.code).toMatch(/^(ERR_SSL_|ECONNRESET$)/);
}

/**
 * Opens a bare TLS connection presenting `id`, sends nothing, and resolves with
 * the server's first move: the code of its TLS alert, "closed", or "answered"
 * (an HTTP/2 server's SETTINGS frame, which it sends to an accepted client).
 */
function handshakeEnd(port: number, ca: string, alpn: string, id?: Pem): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca, ALPNProtocols: [alpn], ...(id ? { key: id.key, cert: id.cert } : {}) });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.once("close", () => resolve("closed"));
    socket.once("data", () => {
      resolve("answered");
      socket.destroy();
    });
  });
}

// ---- the broker -------------------------------------------------------------

describe("AUTH_MODE=mtls", () => {
  let pki: Pki;
  let t: TestBroker;
  const clients: grpc.Client[] = [];
  const g = (id?: Pem, credentials?: grpc.ChannelCredentials) => {
    const c = grpcClient(t.broker.grpcPort, pki.ca.cert, id, credentials);
    clients.push(c);
    return c;
  };
  const web = (id?: Pem, protocol?: "connect" | "grpc-web") => webClient(t.broker.webPort, pki.ca.cert, id, protocol);

  beforeAll(async () => {
    pki = await makePki();
    t = await startTestBroker({
      env: {
        AUTH_MODE: "mtls",
        AUTH_TLS_CERT_FILE: join(pki.dir, "server.pem"),
        AUTH_TLS_KEY_FILE: join(pki.dir, "server.key"),
        AUTH_TLS_CLIENT_CA_FILE: join(pki.dir, "ca.pem"),
        AUTH_MTLS_ADMINS: "gsap-broker",
        ALLOW_DEV_DRIVERS: "true",
      },
    });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await t?.close();
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });

  it("names a delegator by the DID in its certificate's URI SAN, on grpc-js, Connect and gRPC-Web", async () => {
    const viaGrpc = await unary(g(pki.alice), "createDelegation", { delegatorAcId: "ac-alice-mtls", scope: { maxCommands: 5 } });
    expect(viaGrpc.delegation!.delegatorDid).toBe(ALICE);
    const viaConnect = await web(pki.alice).createDelegation({ delegatorAcId: "ac-alice-mtls", scope: { maxCommands: 5 } });
    expect(viaConnect.delegation!.delegatorDid).toBe(ALICE);
    const viaGrpcWeb = await web(pki.alice, "grpc-web").getDelegation({ delegationId: viaGrpc.delegation!.delegationId });
    expect(viaGrpcWeb.delegation!.state).toBe(DelegationState.ACTIVE);
  });

  it("shows a delegator its own delegations and not another's", async () => {
    const mine = await unary(g(pki.alice), "createDelegation", { delegatorAcId: "ac-alice-own", scope: { maxCommands: 5 } });
    const bobs = await web(pki.bob).createDelegation({ delegatorAcId: "ac-bob-own", scope: { maxCommands: 5 } });
    expect(bobs.delegation!.delegatorDid).toBe(BOB);

    const listed = await web(pki.alice).listAgents({ pageSize: 100 });
    const ids = listed.delegations.map((d) => d.delegationId);
    expect(ids).toContain(mine.delegation!.delegationId);
    expect(ids).not.toContain(bobs.delegation!.delegationId);
    expect(listed.delegations.every((d) => d.delegatorDid === ALICE)).toBe(true);

    const err = await grpcFailure(unary(g(pki.alice), "getDelegation", { delegationId: bobs.delegation!.delegationId }));
    expect(err.code).toBe(grpc.status.NOT_FOUND);
    const viaConnect = await connectFailure(web(pki.alice).revokeDelegation({ delegationId: bobs.delegation!.delegationId }));
    expect(viaConnect.code).toBe(Code.NotFound);
  });

  it("ignores the x-delegator-did header: the certificate alone names the caller", async () => {
    const created = await unary(g(pki.alice), "createDelegation", { delegatorAcId: "ac-alice-hdr", scope: { maxCommands: 5 } }, as(BOB));
    expect(created.delegation!.delegatorDid).toBe(ALICE);
    const viaConnect = await web(pki.alice).createDelegation(
      { delegatorAcId: "ac-alice-hdr", scope: { maxCommands: 5 } },
      { headers: as(BOB) },
    );
    expect(viaConnect.delegation!.delegatorDid).toBe(ALICE);

    // Bob naming Alice in the header still reads as Bob.
    const bobList = await web(pki.bob).listAgents({ pageSize: 100 }, { headers: as(ALICE) });
    expect(bobList.delegations.map((d) => d.delegationId)).not.toContain(created.delegation!.delegationId);
    const err = await grpcFailure(unary(g(pki.bob), "getDelegation", { delegationId: created.delegation!.delegationId }, as(ALICE)));
    expect(err.code).toBe(grpc.status.NOT_FOUND);
  });

  it("lets the GSAP service peer (CN in AUTH_MTLS_ADMINS) see every delegation and revoke a delegator context", async () => {
    const a = await unary(g(pki.alice), "createDelegation", { delegatorAcId: "ac-alice-gsap", scope: { maxCommands: 5 } });
    const b = await web(pki.bob).createDelegation({ delegatorAcId: "ac-bob-gsap", scope: { maxCommands: 5 } });

    const all = await unary(g(pki.gsap), "listAgents", { pageSize: 1000 });
    const ids = all.delegations.map((d) => d.delegationId);
    expect(ids).toEqual(expect.arrayContaining([a.delegation!.delegationId, b.delegation!.delegationId]));
    const seen = await web(pki.gsap).getDelegation({ delegationId: b.delegation!.delegationId });
    expect(seen.delegation!.delegatorDid).toBe(BOB);

    const revoked = await unary(g(pki.gsap), "revokeDelegatorContext", { delegatorAcId: "ac-alice-gsap" });
    expect(revoked.revokedDelegationIds).toEqual([a.delegation!.delegationId]);
    const after = await web(pki.alice).getDelegation({ delegationId: a.delegation!.delegationId });
    expect(after.delegation!.state).toBe(DelegationState.REVOKED);
  });

  it("keeps RevokeDelegatorContext from delegators and from service peers that are not admins", async () => {
    const byAlice = await grpcFailure(unary(g(pki.alice), "revokeDelegatorContext", { delegatorAcId: "ac-alice-own" }));
    expect(byAlice.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(errorDetailOf(byAlice)?.reason).toBe("ADMIN_ONLY");
    const byService = await connectFailure(web(pki.service).revokeDelegatorContext({ delegatorAcId: "ac-alice-own" }));
    expect(byService.code).toBe(Code.PermissionDenied);
    const list = await connectFailure(web(pki.service).listAgents({}));
    expect(list.code).toBe(Code.PermissionDenied);
  });

  // OpenSSL itself refuses a missing certificate with an alert; a certificate
  // that fails verification, node:tls refuses right after the handshake by
  // destroying the socket (no alert), before the HTTP or HTTP/2 layer sees it.
  const refusals: [string, () => Pem | undefined, string][] = [
    ["a client without a certificate", () => undefined, "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED"],
    ["a certificate from another CA, even one naming an admin", () => pki.untrusted, "closed"],
    ["an expired certificate from the right CA", () => pki.expired, "closed"],
  ];
  it("accepts a certificate from the client CA at the TLS layer (the control for the refusals below)", async () => {
    expect(await handshakeEnd(t.broker.grpcPort, pki.ca.cert, "h2", pki.alice)).toBe("answered");
  });

  it.each(refusals)("refuses %s during the TLS handshake, on both ports", async (_, id, end) => {
    const err = await grpcFailure(unary(g(id()), "listAgents", {}));
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expectTransportRefusal(await connectFailure(web(id()).listAgents({})));
    expect(await handshakeEnd(t.broker.grpcPort, pki.ca.cert, "h2", id())).toBe(end);
    expect(await handshakeEnd(t.broker.webPort, pki.ca.cert, "http/1.1", id())).toBe(end);
  });

  it("does not speak cleartext on either port", async () => {
    const err = await grpcFailure(unary(g(undefined, grpc.credentials.createInsecure()), "listAgents", {}));
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    // The test broker's own clients are cleartext.
    const plainGrpc = await connectFailure(t.connectGrpc.listAgents({}, { headers: as(ALICE) }));
    const plainWeb = await connectFailure(t.connect.listAgents({}, { headers: as(ALICE) }));
    // Transport failures; a broker that answered would have said UNAUTHENTICATED (no certificate).
    expect([Code.Unavailable, Code.Canceled, Code.Aborted]).toContain(plainGrpc.code);
    expect([Code.Unavailable, Code.Canceled, Code.Aborted]).toContain(plainWeb.code);
  });
});

// ---- the authenticator alone ------------------------------------------------

describe("createMtlsAuthenticator", () => {
  const authenticate = createMtlsAuthenticator({ admins: ["gsap-broker", "did:web:example.com/user/root"] });
  const peer = (certificate: PeerInfo["certificate"], authorized = true): PeerInfo => ({ certificate, authorized });
  const none = new Headers();

  it("takes the first DID among the URI SANs over the CN", async () => {
    const p = await authenticate(none, peer({ subject: { CN: "alice" }, subjectaltname: `DNS:a.example, URI:https://x.example, URI:${ALICE}, URI:${BOB}` }));
    expect(p).toEqual({ did: ALICE, admin: false });
  });

  it("names a service peer by its CN, as clientId, admin when listed", async () => {
    expect(await authenticate(none, peer({ subject: { CN: "gsap-broker" } }))).toEqual({ did: "", admin: true, clientId: "gsap-broker" });
    expect(await authenticate(none, peer({ subject: { CN: "reporting" } }))).toEqual({ did: "", admin: false, clientId: "reporting" });
    expect(await authenticate(none, peer({ subject: { CN: "x" }, subjectaltname: "URI:did:web:example.com/user/root" }))).toEqual({
      did: "did:web:example.com/user/root",
      admin: true,
    });
  });

  it("ignores x-delegator-did", async () => {
    const p = await authenticate(new Headers(as(ALICE)), peer({ subject: { CN: "reporting" } }));
    expect(p.did).toBe("");
  });

  it("refuses a missing, unverified or nameless certificate with UNAUTHENTICATED", async () => {
    const cases: (PeerInfo | undefined)[] = [
      undefined,
      { authorized: true },
      peer({ subject: { CN: "gsap-broker" } }, false),
      peer({ subject: {} }),
      peer({ subject: { CN: ["gsap-broker", "alice"] } }),
    ];
    for (const c of cases) {
      expect(() => authenticate(none, c)).toThrow(expect.objectContaining({ code: "UNAUTHENTICATED" }));
    }
  });

  it("does not read a quoted SAN (Node's escaping of a separator) as two entries", () => {
    // A CA-signed URI "x, URI:did:web:evil" is one name, not a DID.
    const san = `URI:"x, URI:did:web:evil.example", URI:${ALICE}`;
    expect(subjectAltNames(san)).toEqual([
      { type: "URI", value: "x, URI:did:web:evil.example" },
      { type: "URI", value: ALICE },
    ]);
    expect(subjectAltNames(`DNS:a, IP Address:127.0.0.1`)).toEqual([
      { type: "DNS", value: "a" },
      { type: "IP Address", value: "127.0.0.1" },
    ]);
  });
});
