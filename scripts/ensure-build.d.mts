/** Builds `root`'s dist/ unless it is current (see ensure-build.mjs). */
export function ensureBuild(root: string): void;
