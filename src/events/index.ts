export { WatchHub } from "./watch-hub.js";
export type { WatchHubOptions, WatchItem } from "./watch-hub.js";
