export * from "./delegation.js";
export * from "./errors.js";
export * from "./lifecycle.js";
