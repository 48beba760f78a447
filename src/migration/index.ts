export { importPrototype, OUTCOMES, PrototypeImportError } from "./prototype-import.js";
export type { ImportItem, ImportReport, ImportStore, Outcome, PrototypeImportOptions } from "./prototype-import.js";
export { PrototypeFileError, readPrototype } from "./prototype-db.js";
export { firstFound, registrarLookup } from "./identity-lookup.js";
export type { IdentityLookup, IdentityQuery } from "./identity-lookup.js";
export { createKeycloakClientLookup } from "./keycloak-client-lookup.js";
export { formatReport, reportJson } from "./report.js";
