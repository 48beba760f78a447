export type { AgentIdentity, AgentIdentityRef, AgentRegistrar, IdpBackend, RegisterAgentRequest } from "./registrar.js";
export { createRegistrar } from "./factory.js";
export { createStubRegistrar } from "./stub/stub-registrar.js";
