export type { DelegatedContextRequest, DelegatorContext, GsapClient } from "./gsap-client.js";
export { createDevGsap } from "./dev-gsap.js";
export { createHttpGsap } from "./http-gsap.js";
export { createGsap } from "./factory.js";
