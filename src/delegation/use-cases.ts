/** The use cases of the broker, built from one set of dependencies. */
import { AuthorizeCommand } from "./authorize-command.js";
import { Ceremonies } from "./ceremonies.js";
import { CreateDelegation } from "./create-delegation.js";
import type { UseCaseDeps } from "./deps.js";
import { EndDelegation } from "./end-delegation.js";
import { GsapApprovals } from "./gsap-approvals.js";
import { LiveChecks } from "./live-checks.js";
import { Maintenance } from "./maintenance.js";
import { ReadDelegations } from "./read-delegations.js";

export interface UseCases {
  create: CreateDelegation;
  end: EndDelegation;
  authorize: AuthorizeCommand;
  ceremonies: Ceremonies;
  liveChecks: LiveChecks;
  approvals: GsapApprovals;
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
  const end = new EndDelegation(deps, options);
  return {
    create: new CreateDelegation(deps),
    end,
    authorize: new AuthorizeCommand(deps),
    ceremonies: new Ceremonies(deps),
    liveChecks: new LiveChecks(deps, end),
    approvals: new GsapApprovals(deps),
    read: new ReadDelegations(deps.store, deps.reads),
    maintenance: new Maintenance(deps),
  };
}
