export { Loop } from "./loop.js";
export type { LeaseBackend, LoopHealth, LoopLease, LoopOptions, LoopResult, LoopRun } from "./loop.js";
