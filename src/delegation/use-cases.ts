/** The use cases of the broker, built from one set of dependencies. */
import { AuthorizeCommand } from "./authorize-command.js";
import { CreateDelegation } from "./create-delegation.js";
import type { UseCaseDeps } from "./deps.js";
import { EndDelegation } from "./end-delegation.js";
import { Maintenance } from "./maintenance.js";
import { ReadDelegations } from "./read-delegations.js";

export interface UseCases {
  create: CreateDelegation;
  end: EndDelegation;
  authorize: AuthorizeCommand;
  read: ReadDelegations;
  maintenance: Maintenance;
}

export interface UseCaseOptions {
  /** Delegations expired per transaction. */
  expiryBatch?: number;
  /** Told how late each expiry was (ms). */
  onExpired?: (lateMs: number) => void;
}

export function createUseCases(deps: UseCaseDeps, options: UseCaseOptions = {}): UseCases {
  return {
    create: new CreateDelegation(deps),
    end: new EndDelegation(deps, options),
    authorize: new AuthorizeCommand(deps),
    read: new ReadDelegations(deps.store),
    maintenance: new Maintenance(deps),
  };
}
