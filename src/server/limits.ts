/**
 * Per-principal limits applied as an interceptor: rate limits on Create and
 * Authorize, a cap on how long a call may run, and on Watch streams per
 * principal. (Filled in by the limits work; a passthrough until then.)
 */
import type { Settings } from "../config/settings.js";
import type { Logger } from "../logging.js";
import type { Interceptor } from "./interceptors.js";

/** The limits interceptor for `settings.limits`. */
export function limits(_settings: Settings["limits"], _log: Logger): Interceptor {
  return (next) => next;
}
