// Checks the contract for breaking changes against the `main` branch (FILE rules).
// On main itself there is nothing to compare; without git history it says so and passes.
import { execFileSync } from "node:child_process";

const git = (...args) => execFileSync("git", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
let against;
try {
  const head = git("rev-parse", "HEAD");
  const main = git("rev-parse", "--verify", "main");
  // On main, compare with the previous commit so a change to the contract is still checked.
  against = head === main ? git("rev-parse", "--verify", "HEAD~1") : main;
} catch {
  console.log("buf breaking: no git history to compare against; skipped");
  process.exit(0);
}
try {
  execFileSync("buf", ["breaking", "--against", `.git#ref=${against}`], { stdio: "inherit" });
} catch {
  process.exit(1);
}
console.log(`buf breaking: no breaking change against ${against.slice(0, 12)}`);
