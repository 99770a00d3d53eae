// Delivery: the Python agent's rules (agents/tice_agent/sender.py, docs/ingest.md) in the extension.

import assert from "node:assert/strict";
import test from "node:test";

import { KEYS, RETRY } from "../src/lib/agent.js";
import { META } from "../src/lib/spool.js";
import { T0 } from "./support/browser.js";
import { clean, enrolments, install, reports, scenario } from "./support/setup.js";

const MIN = 60000;
const statuses = (collector) => reports(collector).map((r) => r.status);

/** Enrolled, then one interval sent; returns the scenario. */
async function running(t, options) {
  const s = await scenario(t, options);
  await install(s.browser);
  await s.browser.advance(MIN);
  assert.equal(s.collector.stored.size, 1);
  return s;
}

for (const status of [408, 429, 500, 502, 503, 504, 404]) {
  test(`HTTP ${status}: the batch is kept and sent again after a backoff`, async (t) => {
    const { collector, browser } = await running(t);
    collector.script.push({ status });
    await browser.advance(MIN);
    const st = browser.read(KEYS.send);
    assert.equal(st.attempt, 1);
    assert.match(st.last_error, new RegExp(`^HTTP ${status} scripted`));
    assert.ok(st.next_attempt_at > browser.clock - MIN && st.next_attempt_at <= browser.clock + 30000);
    assert.ok(browser.alarms.has(RETRY));
    await browser.advance(5 * MIN);
    assert.deepEqual(collector.seqs(), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(browser.read(KEYS.send).attempt, 0);
    assert.equal(browser.read(META).dead_letter, 0);
    assert.equal(browser.alarms.has(RETRY), false, "no retry alarm once it works");
    clean(browser, collector);
  });
}

for (const status of [400, 403, 413]) {
  test(`HTTP ${status}: the batch is refused for good, dropped as dead letters and never resent`, async (t) => {
    const { collector, browser } = await running(t);
    collector.script.push({ status, error: "refused", detail: "never" });
    await browser.advance(MIN);
    const meta = browser.read(META);
    assert.deepEqual([meta.dead_letter, meta.last_dead_letter, meta.dropped], [1, `HTTP ${status} refused: never`, 0]);
    assert.equal(browser.read(KEYS.send).attempt, 0, "no backoff: retrying cannot help");
    await browser.advance(2 * MIN);
    assert.deepEqual(collector.seqs(), [1, 3, 4], "seq 2 was refused and is not sent again");
    assert.equal(reports(collector).filter((r) => r.body.records.some((x) => x.seq === 2)).length, 1);
    clean(browser, collector, { errors: [/refused a batch for good/] });
  });
}

test("HTTP 401: the device enrols again with the policy's secret and resends at once", async (t) => {
  const { collector, browser } = await running(t);
  const before = browser.read(KEYS.creds);
  collector.revokeAll(); // an administrator re-enrolled the serial elsewhere, or revoked its token
  await browser.advance(MIN);
  assert.deepEqual(statuses(collector), [200, 401, 200]);
  assert.equal(enrolments(collector).length, 2);
  const after = browser.read(KEYS.creds);
  assert.notEqual(after.token, before.token);
  assert.equal(after.device_id, before.device_id, "the same serial is the same device");
  assert.deepEqual(collector.seqs(), [1, 2]);
  assert.equal(browser.read(KEYS.send).attempt, 0);
  clean(browser, collector);
});

test("HTTP 401 and the secret refused too: records are kept, backoff, and it heals when the secret works", async (t) => {
  const { collector, browser } = await running(t);
  collector.revokeAll();
  collector.enrolScript.push({ status: 401, error: "invalid_secret", detail: "unknown or revoked enrol secret" });
  await browser.advance(MIN);
  const st = browser.read(KEYS.send);
  assert.equal(st.attempt, 1);
  assert.match(st.last_error, /token rejected \(HTTP 401 invalid_token: .*\) and enrolment failed: HTTP 401 invalid_secret/);
  await browser.advance(10 * MIN);
  assert.deepEqual(collector.seqs(), Array.from({ length: 12 }, (_, i) => i + 1));
  assert.equal(browser.read(KEYS.send).auth_failed, false);
  clean(browser, collector);
});

test("HTTP 401 twice in a cycle: one enrolment, then a backoff marked auth_failed", async (t) => {
  const { collector, browser } = await running(t);
  collector.script.push({ status: 401 }, { status: 401 });
  await browser.advance(MIN);
  assert.deepEqual(statuses(collector), [200, 401, 401]);
  assert.equal(enrolments(collector).length, 2);
  const st = browser.read(KEYS.send);
  assert.equal(st.auth_failed, true);
  assert.match(st.last_error, /rejects this device's token even after enrolling again/);
  await browser.advance(5 * MIN);
  assert.deepEqual(collector.seqs(), [1, 2, 3, 4, 5, 6, 7]);
  clean(browser, collector);
});

for (const [name, header] of [["delay-seconds", () => "600"], ["HTTP-date", (now) => new Date(now + 600000).toUTCString()]]) {
  test(`Retry-After (${name}) is honoured: nothing is sent sooner`, async (t) => {
    const { collector, browser } = await running(t);
    collector.script.push({ status: 503, headers: { "Retry-After": header(browser.clock + MIN) } });
    await browser.advance(MIN);
    const asked = browser.clock + 600000;
    assert.equal(browser.read(KEYS.send).next_attempt_at, asked);
    assert.equal(browser.alarms.get(RETRY).scheduledTime, asked);
    await browser.advance(599000);
    assert.deepEqual(statuses(collector), [200, 503], "the ticks in between measure but do not send");
    await browser.advance(1000);
    assert.deepEqual(statuses(collector), [200, 503, 200]);
    assert.deepEqual(collector.seqs(), Array.from({ length: 12 }, (_, i) => i + 1));
    clean(browser, collector);
  });
}

test("consecutive failures back off with full jitter under a doubling ceiling, never sooner, across worker restarts", async (t) => {
  const { collector, browser } = await running(t);
  collector.failWith = { status: 503 };
  const failures = []; // the send state after each failed attempt
  for (let i = 0; i < 3 * 360; i++) { // three hours in 10 s steps; workers stop and start all along
    await browser.advance(10000);
    const st = browser.read(KEYS.send);
    if (st.attempt > failures.length) failures.push(st);
  }
  assert.ok(failures.length >= 7, `${failures.length} failures in 3 hours`);
  failures.forEach((st, n) => {
    assert.equal(st.attempt, n + 1);
    const wait = (st.next_attempt_at - st.last_attempt_at) / 1000;
    assert.ok(wait >= 0 && wait <= Math.min(900, 30 * 2 ** n), `failure ${n + 1} waits ${wait} s`);
    if (n > 0) assert.ok(st.last_attempt_at >= failures[n - 1].next_attempt_at, `attempt ${n + 1} came early`);
  });
  const waits = failures.map((st) => (st.next_attempt_at - st.last_attempt_at) / 1000);
  assert.ok(new Set(waits).size === waits.length, "jittered, not fixed");
  assert.equal(reports(collector).length, failures.length + 1, "one request per attempt");
  collector.failWith = null;
  await browser.advance(20 * MIN);
  const total = browser.read(META).next - 1;
  assert.deepEqual(collector.seqs(), Array.from({ length: total }, (_, i) => i + 1));
  clean(browser, collector);
});

test("collector unreachable: records wait; when it is back, each arrives once, oldest first", async (t) => {
  const { collector, browser } = await running(t);
  const url = collector.url;
  await collector.close();
  await browser.advance(30 * MIN);
  assert.match(browser.read(KEYS.send).last_error, /^cannot reach http:\/\/127\.0\.0\.1:\d+\/api\/v1\/reports/);
  const port = Number(new URL(url).port);
  await new Promise((resolve) => collector.server.listen(port, "127.0.0.1", resolve));
  await browser.advance(20 * MIN);
  const total = browser.read(META).next - 1;
  assert.equal(total, 51);
  assert.deepEqual(collector.seqs(), Array.from({ length: total }, (_, i) => i + 1));
  const sent = reports(collector).filter((r) => r.status === 200).flatMap((r) => r.body.records.map((x) => x.seq));
  assert.deepEqual(sent, [...sent].sort((a, b) => a - b), "oldest first");
  clean(browser, collector);
});

test("a backlog drains in batches of batch_max_records, every batch carrying the spool's id", async (t) => {
  const { collector, browser } = await running(t, { policy: { batch_max_records: 7 } });
  collector.failWith = { status: 503 };
  await browser.advance(40 * MIN);
  collector.failWith = null;
  await browser.advance(16 * MIN);
  const ok = reports(collector).filter((r) => r.status === 200);
  assert.ok(ok.every((r) => r.body.records.length <= 7));
  assert.ok(ok.some((r) => r.body.records.length === 7));
  assert.equal(new Set(ok.map((r) => r.body.spool)).size, 1);
  assert.equal(ok[0].body.spool, browser.read(META).id);
  assert.deepEqual(collector.seqs(), Array.from({ length: 57 }, (_, i) => i + 1));
  clean(browser, collector);
});

test("the worker stopped after the collector committed a batch but before it read the answer: resent, stored once", async (t) => {
  const { collector, browser } = await running(t);
  collector.beforeReply = async () => {
    collector.beforeReply = null;
    browser.kill(); // Chrome stops the worker while the answer is on its way
  };
  await browser.advance(MIN); // record 2 is committed; the worker never learns it
  assert.deepEqual(collector.seqs(), [1, 2]);
  assert.equal(browser.read(META).head, 2, "the spool still holds record 2");
  await browser.advance(MIN);
  assert.deepEqual(collector.seqs(), [1, 2, 3]);
  assert.equal(collector.duplicates, 1, "record 2 came twice; the collector stored it once");
  assert.equal(browser.read(KEYS.send).records_duplicate, 1);
  assert.equal(browser.read(META).next - browser.read(META).head, 0);
  clean(browser, collector);
});

test("the worker stopped at any storage call: no record lost, none stored twice, intervals never overlap", async (t) => {
  const steps = async (browser) => {
    await install(browser);
    await browser.setIdle("idle");
    await browser.advance(MIN);
    await browser.setIdle("active");
    await browser.advance(2 * MIN);
  };
  // Count the storage calls of an undisturbed run, then stop the worker at each of them in turn.
  const { browser: probe } = await scenario(t);
  await steps(probe);
  const calls = probe.storageOps;
  assert.ok(calls > 40, `${calls} storage calls`);
  for (let k = 1; k <= calls; k++) {
    const { collector, browser } = await scenario(t);
    browser.killAtStorageOp = k;
    await steps(browser);
    browser.killAtStorageOp = null;
    await browser.advance(5 * MIN); // later wakes finish the work
    const meta = browser.read(META);
    assert.ok(meta, `stop at call ${k}: no spool`);
    const made = Array.from({ length: meta.next - 1 }, (_, i) => i + 1);
    assert.deepEqual(collector.seqs(), made, `stop at call ${k}: stored ${collector.seqs()} of ${made}`);
    assert.equal(meta.head, meta.next, `stop at call ${k}: records left in the spool`);
    assert.equal(meta.dropped + meta.dead_letter, 0);
    let end = 0;
    let measured = 0;
    for (const r of collector.records()) {
      assert.ok(Date.parse(r.at) >= end, `stop at call ${k}: overlapping intervals`);
      end = Date.parse(r.at) + r.duration_s * 1000;
      measured += r.duration_s * 1000;
    }
    assert.ok(end <= browser.clock && end > T0 + 5 * MIN, `stop at call ${k}: measured until ${new Date(end).toISOString()}`);
    // No hole between the first record and the last: a lost tick is covered by the next one.
    const first = Date.parse(collector.records()[0].at);
    assert.ok(first <= T0 + MIN, `stop at call ${k}: measuring began at ${new Date(first).toISOString()}`);
    assert.equal(measured, end - first, `stop at call ${k}: a hole in the measured time`);
    assert.equal([...browser.local.keys()].filter((key) => key.startsWith("r:")).length, 0, `stop at call ${k}: garbage left`);
    clean(browser, collector);
  }
});

test("a long outage overflows a small spool: the oldest are dropped, counted, and the count reaches the collector", async (t) => {
  const { collector, browser } = await running(t, { policy: { spool_max_bytes: 65536, batch_max_records: 100 } });
  collector.failWith = { status: 503 };
  await browser.advance(8 * 60 * MIN); // a school day without the collector: 480 records
  const meta = browser.read(META);
  assert.ok(meta.bytes <= 65536, `${meta.bytes} bytes`);
  assert.ok(meta.dropped > 0, "the spool overflowed");
  assert.ok(browser.bytesInUse() < 65536 + 4096, `${browser.bytesInUse()} bytes in chrome.storage.local`);
  collector.failWith = null;
  await browser.advance(10 * MIN);
  const end = browser.read(META);
  const stored = collector.seqs();
  assert.equal(stored.length + end.dropped, end.next - 1, "stored + dropped = every record made");
  assert.deepEqual(stored.slice(1), Array.from({ length: stored.length - 1 }, (_, i) => end.dropped + 2 + i),
    "the oldest were the ones dropped");
  const ok = reports(collector).filter((r) => r.status === 200);
  assert.ok(ok.slice(1).every((r) => r.body.dropped === end.dropped), "every batch carries the count");
  assert.equal([...collector.dropped.values()][0], end.dropped);
  clean(browser, collector);
});
