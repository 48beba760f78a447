/**
 * The broker's real drivers against loopback fakes of every external system:
 * Keycloak (registrar), GSAP (HTTP driver) and Chronicle (audit sink), and
 * the settings that point a broker at them.
 */
import { ChronicleFake } from "../fakes/chronicle-fake.js";
import { GsapFake } from "../fakes/gsap-fake.js";
import { KeycloakFake } from "../fakes/keycloak-fake.js";

export const GSAP_TOKEN = "gsap-bearer-token-for-tests-0123456789";

export interface World {
  keycloak: KeycloakFake;
  gsap: GsapFake;
  chronicle: ChronicleFake;
  /** Environment for a broker that uses them all. */
  env: Record<string, string>;
  /** Gives `did` an active delegator context in GSAP. */
  delegatorContext(contextId: string, did: string, ceiling?: string, expiresInMs?: number): void;
  close(): Promise<void>;
}

/** Starts the three fakes. */
export async function startWorld(): Promise<World> {
  const [keycloak, gsap, chronicle] = await Promise.all([
    KeycloakFake.start(),
    GsapFake.start({ bearerToken: GSAP_TOKEN }),
    ChronicleFake.start(),
  ]);
  return {
    keycloak,
    gsap,
    chronicle,
    env: {
      AGENT_REGISTRAR: "keycloak",
      KEYCLOAK_URL: keycloak.url,
      KEYCLOAK_REALM: keycloak.realm,
      KEYCLOAK_ADMIN_CLIENT_ID: keycloak.adminClientId,
      KEYCLOAK_ADMIN_CLIENT_SECRET: keycloak.adminClientSecret,
      GSAP_DRIVER: "http",
      GSAP_BROKER_URL: gsap.url,
      GSAP_BEARER_TOKEN: GSAP_TOKEN,
      AUDIT_DRIVER: "chronicle",
      CHRONICLE_WEBHOOK_URL: chronicle.webhookUrl,
      HTTP_TIMEOUT_SECONDS: "1",
      HTTP_MAX_RETRIES: "2",
    },
    delegatorContext(contextId, did, ceiling = "CAP_MUTATE", expiresInMs = 2 * 3600_000) {
      gsap.setContext({
        contextId,
        status: "authorized",
        principalDid: did,
        capabilityCeiling: ceiling,
        expiresAt: new Date(Date.now() + expiresInMs).toISOString(),
      });
    },
    async close() {
      await Promise.all([keycloak.close(), gsap.close(), chronicle.close()]);
    },
  };
}

/** Keycloak clients that belong to delegations (not the broker's own admin client). */
export function agentClients(world: World) {
  return world.keycloak.clients().filter((c) => c.attributes.delegation_id);
}
