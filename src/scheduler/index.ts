export { ExpiryScheduler } from "./expiry-scheduler.js";
export type { ExpirySchedulerOptions, ExpiryTarget } from "./expiry-scheduler.js";
export { Loop } from "./loop.js";
export type { LoopOptions } from "./loop.js";
