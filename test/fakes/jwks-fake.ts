/**
 * A loopback token issuer for tests: a real HTTP server on 127.0.0.1 serving
 * the issuer's JWKS (public keys made with jose, each with a kid), which tests
 * rotate (add a key, drop the old one), count fetches of, slow down or take
 * down; and the tokens to present to the broker: minted with jose's SignJWT
 * (any claims, any key, expired, wrong aud/iss, unknown kid), or built by hand
 * for the two classic attacks on JWT verifiers: `alg: none` with an empty
 * signature, and HS256 "signed" with the RSA public key as the HMAC secret.
 */
import { createHmac, randomUUID } from "node:crypto";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { type CryptoKey, type JWK, type JWTPayload, SignJWT, exportJWK, exportSPKI, generateKeyPair } from "jose";
import { LoopbackFake } from "./loopback.js";

/** An asymmetric signing key and its public half as published. */
export interface SigningKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** The public key as a JWK, with kid, alg and use. */
  publicJwk: JWK;
  /** The public key as SPKI PEM text. */
  publicPem: string;
}

/** Generates a key pair. By default, RS256 with a random kid. */
export async function createSigningKey(alg = "RS256", kid = `key-${randomUUID()}`): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, publicKey, publicJwk, publicPem: await exportSPKI(publicKey) };
}

export interface MintOptions {
  /** Payload claims, over the defaults (iss, aud, iat, exp). An `undefined` value removes a default. */
  claims?: Record<string, unknown>;
  /** `iss`. By default, the fake's issuer; null leaves it out. */
  issuer?: string | null;
  /** `aud`. By default, the fake's audience; null leaves it out. */
  audience?: string | string[] | null;
  /** Seconds from now to `exp`; negative for an expired token; null leaves `exp` out. By default, 300. */
  expiresIn?: number | null;
  /** Seconds from now to `nbf`, when given. */
  notBefore?: number;
  /** The `kid` header: by default the key's; null leaves it out. */
  kid?: string | null;
}

const now = () => Math.floor(Date.now() / 1000);

/** Signs a JWT with `key` (jose SignJWT). `defaults` supply iss and aud. */
export async function mintToken(key: SigningKey, defaults: { issuer: string; audience: string }, options: MintOptions = {}): Promise<string> {
  const payload = tokenClaims(defaults, options);
  const kid = options.kid === undefined ? key.kid : options.kid;
  return new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: key.alg, typ: "JWT", ...(kid === null ? {} : { kid }) }).sign(key.privateKey);
}

/** The payload a token minted with `options` would carry. */
export function tokenClaims(defaults: { issuer: string; audience: string }, options: MintOptions = {}): Record<string, unknown> {
  const t = now();
  const issuer = options.issuer === undefined ? defaults.issuer : options.issuer;
  const audience = options.audience === undefined ? defaults.audience : options.audience;
  const expiresIn = options.expiresIn === undefined ? 300 : options.expiresIn;
  const payload: Record<string, unknown> = {
    ...(issuer === null ? {} : { iss: issuer }),
    ...(audience === null ? {} : { aud: audience }),
    iat: t,
    ...(expiresIn === null ? {} : { exp: t + expiresIn }),
    ...(options.notBefore === undefined ? {} : { nbf: t + options.notBefore }),
    jti: randomUUID(),
    ...options.claims,
  };
  for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
  return payload;
}

const b64url = (data: string | Buffer) => Buffer.from(data).toString("base64url");

/** An unsecured JWT, built by hand: header {"alg":"none"}, the payload, an empty signature. */
export function algNoneToken(payload: Record<string, unknown>): string {
  return `${b64url(JSON.stringify({ alg: "none" }))}.${b64url(JSON.stringify(payload))}.`;
}

/**
 * The key-confusion attack, built by hand: HS256 with the RSA public key's
 * bytes as the HMAC secret (its PEM text, or its JWK as JSON), and the
 * real key's kid, as a verifier that trusted the header's `alg` would accept.
 */
export function hs256WithPublicKey(key: SigningKey, payload: Record<string, unknown>, secret: "pem" | "jwk" = "pem"): string {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT", kid: key.kid }));
  const body = b64url(JSON.stringify(payload));
  const secretBytes = secret === "pem" ? key.publicPem : JSON.stringify(key.publicJwk);
  const signature = createHmac("sha256", secretBytes).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${signature}`;
}

export interface JwksFakeOptions {
  /** The audience tokens are minted for. By default, "llm-broker". */
  audience?: string;
  /** The key algorithm. By default, RS256. */
  alg?: string;
}

const REALM_PATH = "/realms/test";
const CERTS_PATH = `${REALM_PATH}/protocol/openid-connect/certs`;

/** The issuer: its JWKS endpoint and its tokens. */
export class JwksFake extends LoopbackFake {
  /** Keys published in the JWKS, oldest first. */
  readonly keys: SigningKey[] = [];
  /** Requests for the JWKS that reached the server. */
  fetches = 0;
  /** Every JWKS answer waits this long first (a slow issuer). */
  delayMs = 0;
  /** When set, the JWKS is answered with this status and no keys (a broken issuer). */
  failStatus: number | undefined;
  /** When set, the JWKS is answered 200 with this body instead of the keys (a confused issuer). */
  malformedBody: string | undefined;
  readonly audience: string;


  private constructor(
    server: Server,
    private readonly alg: string,
    audience: string,
  ) {
    super(server);
    this.audience = audience;
  }

  /** Starts an issuer with one key on an ephemeral loopback port. */
  static async start(options: JwksFakeOptions = {}): Promise<JwksFake> {
    let fake!: JwksFake;
    const server = createServer((req, res) => void fake.handle(req, res));
    fake = new JwksFake(server, options.alg ?? "RS256", options.audience ?? "llm-broker");
    await fake.addKey();
    await fake.up();
    return fake;
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The `iss` of its tokens (AUTH_JWT_ISSUER). */
  get issuer(): string {
    return `${this.origin}${REALM_PATH}`;
  }

  /** The JWKS URL (AUTH_JWKS_URL). */
  get jwksUrl(): string {
    return `${this.origin}${CERTS_PATH}`;
  }

  /** The newest published key. */
  get currentKey(): SigningKey {
    return this.keys[this.keys.length - 1]!;
  }

  /** Settings for a broker that trusts this issuer. */
  env(): Record<string, string> {
    return { AUTH_MODE: "jwt", AUTH_JWT_ISSUER: this.issuer, AUTH_JWT_AUDIENCE: this.audience, AUTH_JWKS_URL: this.jwksUrl };
  }

  /** Generates and publishes a new key. */
  async addKey(kid?: string): Promise<SigningKey> {
    const key = await createSigningKey(this.alg, kid);
    this.keys.push(key);
    return key;
  }

  /** Stops publishing the key with this kid. */
  removeKey(kid: string): void {
    const at = this.keys.findIndex((k) => k.kid === kid);
    if (at >= 0) this.keys.splice(at, 1);
  }

  /** Rotation: publishes a new key and drops every older one. Returns the new key. */
  async rotate(): Promise<SigningKey> {
    const old = [...this.keys];
    const next = await this.addKey();
    for (const k of old) this.removeKey(k.kid);
    return next;
  }

  /** A token from this issuer, signed by `key` (by default, the newest published key). */
  token(options: MintOptions = {}, key: SigningKey = this.currentKey): Promise<string> {
    return mintToken(key, this, options);
  }

  /** The payload a token from this issuer would carry (for hand-built tokens). */
  claims(options: MintOptions = {}): Record<string, unknown> {
    return tokenClaims(this, options);
  }





  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== "GET" || req.url !== CERTS_PATH) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "not found" }));
      return;
    }
    this.fetches++;
    if (this.delayMs > 0) {
      await this.sleep(this.delayMs);
      if (!this.listening) return;
    }
    if (this.failStatus !== undefined) {
      res.writeHead(this.failStatus, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "unavailable" }));
      return;
    }
    res.writeHead(200, { "content-type": "application/json", "cache-control": "no-cache" });
    res.end(this.malformedBody ?? JSON.stringify({ keys: this.keys.map((k) => k.publicJwk) }));
  }
}
