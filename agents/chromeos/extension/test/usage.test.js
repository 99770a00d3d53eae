// The tally: active, idle and locked seconds per interval, whole seconds that add up.

import assert from "node:assert/strict";
import test from "node:test";

import { advance, close, fresh, toRecord, withState } from "../src/lib/usage.js";
import { seeded, T0 } from "./support/browser.js";
import { validate } from "./support/wire.js";

const GAP = 90000;
const S = 1000;

test("an interval counts each state from the event that started it", () => {
  let t = fresh(T0, "active");
  t = withState(advance(t, T0 + 20 * S, GAP).tally, "idle");
  t = withState(advance(t, T0 + 45 * S, GAP).tally, "locked");
  t = advance(t, T0 + 60 * S, GAP).tally;
  const { record, next } = close(t);
  assert.deepEqual(record, { type: "usage", at: "2026-11-30T08:00:00.000Z", duration_s: 60, active_s: 20, idle_s: 25,
    locked_s: 15, source: "chrome" });
  assert.deepEqual(validate("Usage", { ...record, seq: 1 }), []);
  assert.equal(next.start, T0 + 60 * S);
  assert.equal(next.state, "locked");
});

test("milliseconds round to whole seconds that add up to the duration exactly", () => {
  let t = fresh(T0, "active");
  t = withState(advance(t, T0 + 20400, GAP).tally, "idle"); // 20.4 s active
  t = withState(advance(t, T0 + 39700, GAP).tally, "locked"); // 19.3 s idle, then 20.3 s locked
  const { record } = close(advance(t, T0 + 60 * S, GAP).tally);
  assert.deepEqual([record.active_s, record.idle_s, record.locked_s], [21, 19, 20]); // 20.4 gets the spare second
  assert.equal(record.active_s + record.idle_s + record.locked_s, record.duration_s);
});

test("an interval starts and ends on whole seconds: it closes at the second after its last event", () => {
  let t = fresh(T0 + 400, "active");
  assert.equal(t.start, T0 + S);
  t = withState(advance(t, T0 + 30700, GAP).tally, "idle");
  const { record, next } = close(t);
  assert.equal(record.at, "2026-11-30T08:00:01.000Z");
  assert.deepEqual([record.duration_s, record.active_s, record.idle_s], [30, 30, 0]); // 29.7 s active, 0.3 s idle
  assert.equal(next.start, T0 + 31 * S);
});

test("a gap longer than the limit (device asleep, browser closed) is left out", () => {
  let t = fresh(T0, "active");
  t = advance(t, T0 + 50 * S, GAP).tally;
  const { tally, record } = advance(t, T0 + 50 * S + GAP + 1, GAP);
  assert.deepEqual([record.duration_s, record.active_s], [50, 50]);
  assert.equal(tally.start, T0 + 141 * S);
  assert.equal(tally.state, "active");
  const at = advance(t, T0 + 50 * S + GAP, GAP); // exactly at the limit: still counted
  assert.equal(at.record, null);
});

test("a clock stepped back closes the interval instead of stalling it", () => {
  let t = fresh(T0, "idle");
  t = advance(t, T0 + 40 * S, GAP).tally;
  const { tally, record } = advance(t, T0 - 3600 * S, GAP);
  assert.deepEqual([record.duration_s, record.idle_s], [40, 40]);
  assert.equal(tally.start, T0 - 3600 * S);
  assert.equal(advance(t, T0 + 38 * S, GAP).record, null, "a small step back is ignored");
});

test("an empty interval gives no record", () => {
  assert.equal(close(fresh(T0, "active")).record, null);
  assert.equal(toRecord(fresh(T0, "active")), null);
});

test("random days of events: every record is valid wire, parts add up, intervals never overlap", () => {
  const random = seeded(42);
  const states = ["active", "idle", "locked"];
  for (let day = 0; day < 20; day++) {
    let now = T0 + day * 86400 * S;
    let t = fresh(now, "active");
    const records = [];
    for (let i = 0; i < 400; i++) {
      now += Math.floor(random() * (random() < 0.02 ? 600 * S : 40 * S));
      const a = advance(t, now, GAP);
      if (a.record) records.push(a.record);
      t = a.tally;
      if (random() < 0.3) {
        const c = close(t);
        if (c.record) records.push(c.record);
        t = c.next;
      }
      t = withState(t, states[Math.floor(random() * 3)]);
    }
    let end = -Infinity;
    for (const [i, r] of records.entries()) {
      assert.deepEqual(validate("Usage", { ...r, seq: i + 1 }), [], JSON.stringify(r));
      assert.equal(r.active_s + r.idle_s + r.locked_s, r.duration_s);
      assert.ok(Number.isInteger(r.duration_s) && r.duration_s > 0);
      const start = Date.parse(r.at);
      assert.ok(start >= end, `record ${i} overlaps the one before`);
      end = start + r.duration_s * S;
    }
  }
});
