export { startServer } from "./create-server.js";
export type { RunningServer, ServerOptions } from "./create-server.js";
export { createDelegationService } from "./delegation-service.js";
export { authentication, errorMapping, intercept, logging } from "./interceptors.js";
export { devAuthenticator, DEV_DID_HEADER } from "./principal.js";
