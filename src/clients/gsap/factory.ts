/**
 * Builds the GSAP driver settings select: http (the real broker) or dev.
 * loadSettings has resolved GSAP_DRIVER=auto (http when GSAP_BROKER_URL or
 * GSAP_BEARER_TOKEN is set, both then required; dev otherwise).
 */
import type { Settings } from "../../config/settings.js";
import type { Logger } from "../../logging.js";
import { HttpClient, httpOptionsFrom } from "../http/http-client.js";
import { createDevGsap } from "./dev-gsap.js";
import { createHttpGsap } from "./http-gsap.js";
import type { GsapClient } from "./gsap-client.js";

/** Builds the GSAP driver the settings select. */
export function createGsap(settings: Settings, log: Logger): GsapClient {
  switch (settings.gsapDriver) {
    case "dev":
      return createDevGsap({ delegatorCeiling: settings.devDelegatorCeiling });
    case "http":
      return createHttpGsap({
        ...settings.gsap,
        capabilityOrder: settings.capabilityOrder,
        http: new HttpClient({ system: "gsap", ...httpOptionsFrom(settings.http) }),
        log,
      });
  }
}
