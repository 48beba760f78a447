export type { AgentIdentity, AgentIdentityRef, AgentRegistrar, IdpBackend, RegisterAgentRequest } from "./registrar.js";
export { createRegistrar, registrarDriver } from "./factory.js";
export { createEntraRegistrar } from "./entra/entra-registrar.js";
export { createKeycloakRegistrar } from "./keycloak/keycloak-registrar.js";
export { createStubRegistrar } from "./stub/stub-registrar.js";
