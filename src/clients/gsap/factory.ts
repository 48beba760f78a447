/** Chooses the GSAP driver: GSAP_DRIVER=dev (explicit dev mode) or http (the real broker). */
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
