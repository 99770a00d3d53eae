// Active time: a tally of milliseconds per idle state, cut into wire `usage` records.
//
// The rule. chrome.idle says "active", "idle" (no input for the detection interval) or
// "locked". Time between two observations (an idle event or an alarm) is counted whole in the
// state that held since the earlier one; Chrome reports "idle" only `idle_detection_s` after the
// last input, so active time includes up to that delay after the last key press, as Chrome's
// own device activity report does with its 300 s. Locked counts as locked, never as active.
//
// A gap longer than `maxGapMs` since the last observation means the extension was not running
// (device asleep, browser closed, user signed out): that time is not known, so the interval is
// closed at the last observation and the gap is left out. The same holds when the clock steps
// back. Under-counting is preferred to counting a sleeping device as used.
//
// Records are whole seconds: interval bounds are whole seconds of the device clock and the parts
// are rounded with the largest-remainder method, so active_s + idle_s + locked_s == duration_s
// exactly (the collector refuses records whose parts exceed the interval).
//
// A tally is plain JSON ({start, seen, state, ms: {active, idle, locked}}) kept in
// chrome.storage.local, so a worker stopped at any time loses nothing it had stored.

export const STATES = Object.freeze(["active", "idle", "locked"]);
const BACKWARDS_TOLERANCE_MS = 5000;

const ceilSec = (ms) => Math.ceil(ms / 1000) * 1000;

export function fresh(now, state) {
  const t = ceilSec(now);
  return { start: t, seen: t, state: STATES.includes(state) ? state : "active", ms: { active: 0, idle: 0, locked: 0 } };
}

function accrue(t, to) {
  if (to <= t.seen) return t;
  return { ...t, seen: to, ms: { ...t.ms, [t.state]: t.ms[t.state] + (to - t.seen) } };
}

/** Close `t` at the next whole second after its last observation. Returns the record (or null) and the next tally. */
export function close(t) {
  const end = ceilSec(t.seen);
  const full = accrue(t, end);
  return { record: toRecord(full), next: { start: end, seen: end, state: t.state, ms: { active: 0, idle: 0, locked: 0 } } };
}

/**
 * Bring the tally to `now`. Returns {tally, record}: `record` is the interval closed by a gap or
 * a backwards clock step (else null); the returned tally then starts at `now`.
 */
export function advance(t, now, maxGapMs) {
  if (now > t.seen + maxGapMs || now < t.seen - BACKWARDS_TOLERANCE_MS) {
    return { tally: fresh(now, t.state), record: close(t).record };
  }
  return { tally: accrue(t, now), record: null };
}

/** Set the state from `now` on (after advancing to `now`). */
export function withState(t, state) {
  return STATES.includes(state) ? { ...t, state } : t;
}

/** Largest-remainder rounding of millisecond parts to whole seconds that add up to `totalS`. */
function seconds(ms, totalS) {
  const keys = STATES;
  const whole = keys.map((k) => Math.floor(ms[k] / 1000));
  let left = totalS - whole.reduce((a, b) => a + b, 0);
  const order = keys.map((k, i) => [ms[k] % 1000, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (const [, i] of order) {
    if (left <= 0) break;
    whole[i] += 1;
    left -= 1;
  }
  return Object.fromEntries(keys.map((k, i) => [k, whole[i]]));
}

/** The wire `usage` record (without seq: the spool gives it) for a closed tally, or null if empty. */
export function toRecord(t) {
  const durationS = Math.round((t.seen - t.start) / 1000);
  if (durationS <= 0) return null;
  const s = seconds(t.ms, durationS);
  return {
    type: "usage",
    at: new Date(t.start).toISOString(),
    duration_s: durationS,
    active_s: s.active,
    idle_s: s.idle,
    locked_s: s.locked,
    source: "chrome",
  };
}
