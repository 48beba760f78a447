/** The client verbs, speaking gRPC to a running broker. */
export { AUTHORIZE_USAGE_HINT, addAuthorizeVerb } from "./authorize.js";
export { addCeremonyVerbs } from "./ceremonies.js";
export { type Done, addDelegationVerbs } from "./delegations.js";
export { addWatchVerb } from "./watch.js";
