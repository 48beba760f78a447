/** Chooses the GSAP driver: GSAP_DRIVER=dev (explicit dev mode) or http (the real broker). */
import type { Settings } from "../../config/settings.js";
import type { Logger } from "../../logging.js";
import { createDevGsap } from "./dev-gsap.js";
import type { GsapClient } from "./gsap-client.js";

/** Builds the GSAP driver the settings select. */
export function createGsap(settings: Settings, _log: Logger): GsapClient {
  switch (settings.gsapDriver) {
    case "dev":
      return createDevGsap({ delegatorCeiling: settings.devDelegatorCeiling });
    case "http":
      throw new Error("GSAP_DRIVER=http is wired in the next commit");
  }
}
