export { canAct } from "./access.js";
export { AuthorizeCommand } from "./authorize-command.js";
export { CreateDelegation, type CreateInput } from "./create-delegation.js";
export type { AuditGate, UseCaseDeps, UseCaseSettings } from "./deps.js";
export { EndDelegation, END_BATCH, type RevokeInput } from "./end-delegation.js";
export { Maintenance } from "./maintenance.js";
export { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, ReadDelegations, type ListInput, type ListResult } from "./read-delegations.js";
export { createUseCases, type UseCases } from "./use-cases.js";
