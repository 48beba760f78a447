/**
 * A gate a fake's reads wait at: `hold()` closes it and returns its release;
 * `passed()` is what a read awaits (at once while the gate is open).
 */
export function readGate() {
  let gate: Promise<void> | undefined;
  return {
    passed: () => gate,
    hold(): () => void {
      let release!: () => void;
      gate = new Promise<void>((r) => (release = r));
      return () => {
        gate = undefined;
        release();
      };
    },
  };
}
